"""A real multi-process web server (gunicorn or uvicorn --workers) running the example
app as service "web", and a real HTTP load at steady concurrency, for the tests and the
benchmark. Everything listens on 127.0.0.1, on a free port, and is stopped at the end."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
PICKY = Path(__file__).parent / "fixtures" / "service" / "hello_picky.py"
MODULES = ROOT / "examples" / "webapp" / "modules"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, what: str = "it") -> Any:
    deadline = time.monotonic() + timeout
    delay = 0.02
    while True:
        try:
            value = predicate()
        except Exception:
            value = None
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout}s"
        time.sleep(delay)
        delay = min(delay * 2, 0.25)


class WebService:
    """``kind`` is "gunicorn" or "uvicorn"; ``workers`` processes serve the example app."""

    def __init__(self, kind: str, workers: int = 4, service: str = "web") -> None:
        self.kind, self.workers, self.service = kind, workers, service
        self.runtime = tempfile.mkdtemp(prefix="lmweb")
        self.marker = os.path.join(self.runtime, "marker")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "XDG_RUNTIME_DIR": self.runtime,
                    "LIVEMOD_WEBAPP_SERVICE": service, "LIVEMOD_TEST_MARKER": self.marker,
                    "PYTHONPATH": str(ROOT)}
        self.env.pop("LIVEMOD_SOCKET", None)
        bind = ["-b", f"127.0.0.1:{self.port}"]
        if kind == "gunicorn":
            cmd = [sys.executable, "-m", "gunicorn", "-c", "examples/webapp/gunicorn.conf.py",
                   "-w", str(workers), "-k", "uvicorn.workers.UvicornWorker", *bind,
                   "--graceful-timeout", "5", "examples.webapp.app:app"]
        else:
            cmd = [sys.executable, "-m", "uvicorn", "examples.webapp.app:app",
                   "--workers", str(workers), "--host", "127.0.0.1", "--port",
                   str(self.port), "--log-level", "warning"]
        self.log = tempfile.TemporaryFile("w+")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_for(lambda: len(self.worker_pids()) == workers and self.ready(), 90,
                     f"{workers} {kind} workers answering")
        except BaseException:
            self.stop()
            raise

    @property
    def folder(self) -> str:
        return os.path.join(self.runtime, "livemod", self.service)

    def worker_pids(self) -> list[int]:
        try:
            names = os.listdir(self.folder)
        except FileNotFoundError:
            return []
        return sorted(int(n[:-5]) for n in names if n.endswith(".sock") and n[:-5].isdigit()
                      and _alive(int(n[:-5])))

    def ready(self) -> bool:
        r = httpx.get(self.url + "/hello", timeout=5)
        return r.status_code == 200 and self.json("status") is not None

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "livemod.cli", "--service", self.service,
                               *args], env=self.env, cwd=ROOT, capture_output=True,
                              text=True, timeout=timeout)

    def json(self, *args: str) -> Any:
        r = self.cli(*args, "--json")
        assert r.returncode == 0, (args, r.stdout, r.stderr)
        return json.loads(r.stdout)

    def versions(self) -> dict[int, str]:
        rows = self.json("lsmod")["workers"]
        return {int(p): next(r["version"] for r in rs if r["name"] == "hello")
                for p, rs in rows.items()}

    def generations(self) -> dict[int, int]:
        return {int(p): st["service"]["generation"]
                for p, st in self.json("status")["workers"].items()}

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def stop(self) -> None:
        for pid in self.worker_pids():
            _signal(pid, signal.SIGCONT)
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.log.close()
        shutil.rmtree(self.runtime, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


@dataclass
class Load:
    """``clients`` threads, each sending GET /hello one after another on a new connection
    (so requests spread over the workers). Records (sent, done, status, version)."""

    url: str
    clients: int = 8
    records: list[tuple[float, float, int, str]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, daemon=True)
                         for _ in range(self.clients)]

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(30)

    def _run(self) -> None:
        limits = httpx.Limits(max_keepalive_connections=0)
        with httpx.Client(limits=limits, timeout=15) as client:
            while not self._stop.is_set():
                sent = time.monotonic()
                try:
                    r = client.get(self.url + "/hello")
                    rec = (sent, time.monotonic(), r.status_code,
                           r.headers.get("x-hello-version", "?"))
                    if r.status_code != 200:
                        with self._lock:
                            self.failures.append(f"{r.status_code}: {r.text[:80]}")
                except httpx.HTTPError as exc:
                    with self._lock:
                        self.failures.append(f"{type(exc).__name__}: {exc}")
                    continue
                with self._lock:
                    self.records.append(rec)

    def since(self, t: float) -> list[tuple[float, float, int, str]]:
        with self._lock:
            return [r for r in self.records if r[0] >= t]

    def count(self) -> int:
        with self._lock:
            return len(self.records)
