"""The example web application served by real uvicorn on loopback, upgraded under load.

uvicorn runs in a thread of this process (``uvicorn.Server`` on a socket bound to a free
port), so the test reaches the app's host directly (``app.state.host``) to upgrade the route
module, while 20 httpx clients keep requesting ``/hello``. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import livemod
from livemod import State

pytest.importorskip("starlette")
uvicorn = pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # examples/ is not installed: import it from the checkout
    sys.path.insert(0, str(ROOT))

from examples.webapp.app import MODULES_DIR, create_app  # noqa: E402

pytestmark = pytest.mark.usefixtures("no_stray_threads")

V1 = str(MODULES_DIR / "hello_v1.py")
V2 = str(MODULES_DIR / "hello_v2.py")
HELLO = re.compile(r"^hello from (v1|v2) \(request \d+\)\n$")
CLIENTS = 20
UPGRADES = 20


@dataclass(frozen=True, slots=True)
class Served:
    url: str
    host: livemod.Host
    socket: str


@pytest.fixture
def served(wait_for: Callable[..., Any]) -> Iterator[Served]:
    """The app on 127.0.0.1:<free port>, with its control socket in a fresh folder."""
    folder = tempfile.mkdtemp(prefix="lm-web-", dir="/tmp")  # short: a Unix socket path
    control = os.path.join(folder, "ctl.sock")
    app = create_app(socket=control)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False,
                                           lifespan="on", timeout_graceful_shutdown=5))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]},
                              name="uvicorn", daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started or not thread.is_alive(), timeout=15.0,
                 what="uvicorn to start")
        assert server.started, "uvicorn did not start (see the log above)"
        yield Served(f"http://127.0.0.1:{port}", app.state.host, control)
    finally:
        server.should_exit = True
        thread.join(15)
        listener.close()
        shutil.rmtree(folder, ignore_errors=True)
    assert not thread.is_alive(), "uvicorn did not stop"


@dataclass(frozen=True, slots=True)
class Record:
    start: float
    end: float
    status: int  # 0: the request failed (no response)
    body: str

    @property
    def version(self) -> str | None:
        match = HELLO.match(self.body)
        return match.group(1) if match else None


async def until(predicate: Callable[[], object], what: str, timeout: float = 10.0) -> None:
    """Poll ``predicate`` on the loop until it is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.001
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.02)


def slow_requests_inside(host: livemod.Host) -> int:
    with host.hold("hello") as hello:
        return int(hello.active())


@dataclass
class Run:
    records: list[Record]
    slow: Record
    upgrades: list[tuple[float, float, str]]  # (called, returned, version now serving)
    removed: tuple[float, float]  # rmmod called, insmod returned


async def drive(served: Served) -> Run:
    host = served.host
    records: list[Record] = []
    stop = asyncio.Event()
    limits = httpx.Limits(max_connections=CLIENTS + 4, max_keepalive_connections=CLIENTS + 4)
    async with httpx.AsyncClient(base_url=served.url, limits=limits, timeout=10.0) as client:

        async def get(path: str) -> Record:
            start = time.monotonic()
            try:
                response = await client.get(path)
            except httpx.HTTPError as exc:
                return Record(start, time.monotonic(), 0, repr(exc))
            return Record(start, time.monotonic(), response.status_code, response.text)

        async def worker() -> None:
            while not stop.is_set():
                records.append(await get("/hello"))

        def served_since(t: float, count: int, status: int = 200) -> Callable[[], bool]:
            return lambda: sum(r.start >= t and r.status == status for r in records) >= count

        workers = [asyncio.create_task(worker()) for _ in range(CLIENTS)]
        try:
            await until(served_since(0.0, CLIENTS), "the first responses")

            # A slow request enters v1; the first upgrade switches to v2 meanwhile.
            slow_started = time.monotonic()
            slow = asyncio.create_task(get("/slow"))
            await until(lambda: slow_requests_inside(host) == 1, "the slow request to enter v1")
            called = time.monotonic()
            upgrade = asyncio.create_task(asyncio.to_thread(host.replace, "hello", V2))
            await until(lambda: any(r.start >= called and r.version == "v2" for r in records),
                        "v2 to serve while the slow request is still on v1")
            assert not slow.done(), "the slow request ended before v2 was serving"
            assert (await upgrade).version == "2.0.0"
            upgrades = [(called, time.monotonic(), "v2")]
            slow_record = await slow
            assert upgrades[0][1] - slow_started >= 0.5, "replace did not wait for v1's call"
            await until(served_since(upgrades[0][1], CLIENTS), "traffic after upgrade 0")

            for i in range(1, UPGRADES):
                path, version = (V1, "v1") if i % 2 else (V2, "v2")
                called = time.monotonic()
                await asyncio.to_thread(host.replace, "hello", path, downgrade=True)
                upgrades.append((called, time.monotonic(), version))
                await until(served_since(upgrades[-1][1], CLIENTS), f"traffic after upgrade {i}")

            removing = time.monotonic()
            await asyncio.to_thread(host.rmmod, "hello")
            await until(served_since(time.monotonic(), CLIENTS, 404), "404s while hello is out")
            await asyncio.to_thread(host.insmod, V1)
            back = time.monotonic()
            await until(served_since(back, CLIENTS), "hello to serve again")
        finally:
            stop.set()
            await asyncio.gather(*workers)
    return Run(records, slow_record, upgrades, (removing, back))


def test_upgrades_under_load_lose_no_request(served: Served) -> None:
    # A bound against a hang, not a speed claim: each step waits on a condition, and on a
    # loaded 2-core machine ten upgrades under 8 clients took more than 30 s.
    run = asyncio.run(asyncio.wait_for(drive(served), timeout=120.0))
    records = run.records
    assert len(records) > CLIENTS * (UPGRADES + 3)

    failed = [r for r in records if r.status not in (200, 404)]
    assert failed == [], f"{len(failed)} failed requests, e.g. {failed[:3]}"
    removing, back = run.removed
    stray_404 = [r for r in records if r.status == 404 and not (r.end >= removing
                                                                and r.start <= back)]
    assert stray_404 == [], "404s outside the time hello was removed"
    unnamed = [r for r in records if r.status == 200 and r.version is None]
    assert unnamed == [], f"responses that do not say which version served them: {unnamed[:3]}"

    # The slow request started on v1 and finished on v1, although v2 was serving meanwhile.
    assert run.slow.status == 200 and run.slow.body == "slow from v1\n"

    # Between two upgrades, every request that started after one returned and ended before
    # the next was called was served by the version just switched in.
    bounds = [*run.upgrades, (removing, removing, "")]
    for (_, returned, version), (next_called, _, _) in itertools.pairwise(bounds):
        window = [r for r in records
                  if r.status == 200 and r.start >= returned and r.end <= next_called]
        assert window, "no traffic between two upgrades"
        assert {r.version for r in window} == {version}
    first = [r for r in records if r.end <= run.upgrades[0][0]]
    assert first and {r.version for r in first} == {"v1"}
    after = [r for r in records if r.start >= back]
    assert after and {r.version for r in after} == {"v1"}

    host = served.host
    assert [(s.name, s.version, s.state) for s in host.lsmod() if s.name == "hello"] == [
        ("hello", "1.0.0", State.LIVE)]
    assert host.leaks() == [], "an old version of hello is still alive"
    assert host.tainted == ()
    kinds = [e.kind for e in host.events() if e.module == "hello"]
    assert kinds.count("upgrade") == UPGRADES


def test_the_app_is_controlled_over_its_socket(served: Served) -> None:
    control = pytest.importorskip("livemod.control")
    client = control.ControlClient(served.socket)
    rows = {r["name"]: (r["version"], r["state"]) for r in client.call("lsmod")}
    assert rows == {"guard": ("1.0.0", "LIVE"), "headers": ("1.0.0", "LIVE"),
                    "hello": ("1.0.0", "LIVE")}
    with httpx.Client(base_url=served.url, timeout=10.0) as http:
        assert http.get("/hello").text == "hello from v1 (request 1)\n"
        row = client.call("upgrade", name="hello", path=V2)
        assert (row["version"], row["state"]) == ("2.0.0", "LIVE")
        response = http.get("/hello")
        assert response.text == "hello from v2 (request 2)\n"  # the count was handed over
        assert response.headers["x-powered-by"] == "livemod"  # the middleware module
        assert http.get("/private/x").status_code == 403  # the guard module
        client.call("param", name="hello", key="greeting", value="hi")
        assert http.get("/hello").text.startswith("hi from v2")
        client.call("rmmod", name="hello")
        assert http.get("/hello").status_code == 404
        client.call("insmod", path=V1)
        assert http.get("/hello").text.startswith("hello from v1")
    assert served.host.leaks() == []


def livemod_command(served: Served, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "livemod.cli", "--socket", served.socket, *args],
        capture_output=True, text=True, timeout=30,
    )


def test_the_readme_upgrade_command(served: Served) -> None:
    """``livemod --socket ... upgrade hello examples/webapp/modules/hello_v2.py``."""
    pytest.importorskip("livemod.control")
    with httpx.Client(base_url=served.url, timeout=10.0) as http:
        assert http.get("/hello").text.startswith("hello from v1")
        done = livemod_command(served, "upgrade", "hello", V2)
        assert done.returncode == 0, done.stderr
        assert http.get("/hello").text.startswith("hello from v2")
        back = livemod_command(served, "upgrade", "hello", V1)
        assert back.returncode != 0 and "downgrade" in back.stderr
        assert http.get("/hello").text.startswith("hello from v2")
        back = livemod_command(served, "upgrade", "--downgrade", "hello", V1)
        assert back.returncode == 0, back.stderr
        assert http.get("/hello").text.startswith("hello from v1")
    assert served.host.leaks() == []
