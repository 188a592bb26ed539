"""Hot upgrade under HTTP load: upgrade latency, and request latency during upgrades.

Run (from the repository root; needs starlette, uvicorn and httpx -- the ``web`` extra)::

    python bench/bench_upgrade.py           # 6 rounds of 2 x 2 s runs (~30 s)
    python bench/bench_upgrade.py --quick   # 2 rounds of 2 x 0.6 s runs (smoke test)
    python bench/bench_upgrade.py --check   # exit 1 if p99 during upgrades > 2x without

The server is the real example app (``examples/webapp``) under real uvicorn on 127.0.0.1,
in a child process of its own, so the load generator does not share its GIL. The child
takes commands on stdin (``replace PATH``) and calls ``host.replace("hello", PATH)``,
answering with the call's start and end on ``time.monotonic`` (one clock for both
processes on Linux).

The load: 20 httpx clients in one asyncio loop, each requesting ``GET /hello`` back to back.
Each round has two runs of the same length with the same load, in alternating order:

* **quiet**: no upgrade;
* **upgrades**: ``hello`` is upgraded over and over, v1 -> v2 -> v1 ..., each next upgrade
  sent once 40 responses came back after the previous one returned.

Measured:

* **upgrade latency**: ``replace`` call start to the first response of a request sent after
  it that says the new version (the command-to-v2-serving latency an operator sees); it
  includes one request's latency under this load;
* **replace -> published**: call start to the switch (the host's ``upgrade`` event, which
  is logged right after v2 is published), on the server;
* **replace call**: the whole call (switch, waiting for v1's calls, exit, leak check);
* request latency **p50 / p99** per run; the verdict is the median over rounds of the
  per-round ratios upgrades/quiet (the aim: p99 ratio <= 2).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODULES = ROOT / "examples" / "webapp" / "modules"
V1, V2 = str(MODULES / "hello_v1.py"), str(MODULES / "hello_v2.py")
CLIENTS = 20
PACE = 40  # responses after one upgrade returned before the next is sent
HELLO = re.compile(r"^hello from (v1|v2) ")
AIM_P99 = 2.0


# ------------------------------------------------------------------ the server child


def serve() -> None:
    """Child: the example app under uvicorn; ``replace PATH`` commands on stdin."""
    sys.path.insert(0, str(ROOT))
    import uvicorn
    from examples.webapp.app import create_app

    app = create_app(socket="off")
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False,
                                           lifespan="on", backlog=256))

    def commands() -> None:
        while not server.started:
            if server.should_exit:
                return
            time.sleep(0.01)  # start-up only; uvicorn offers no event to wait on
        print(f"ready {listener.getsockname()[1]}", flush=True)
        host = app.state.host
        switched: list[float] = []

        def on_event(event: object) -> None:
            if getattr(event, "kind", "") == "upgrade":  # logged right after the switch
                switched.append(time.monotonic())

        host.on_event(on_event)
        for line in sys.stdin:
            word, _, arg = line.strip().partition(" ")
            if word == "replace":
                t0 = time.monotonic()
                module = host.replace("hello", arg, downgrade=True)
                t1 = time.monotonic()
                ts = switched[-1] if switched else t1
                print(f"done {t0!r} {ts!r} {t1!r} {module.version}", flush=True)
            elif word == "check":
                leaks, taints = host.leaks(), host.tainted
                print(f"checked leaks={len(leaks)} taints={len(taints)}", flush=True)
            else:
                break
        server.should_exit = True

    threading.Thread(target=commands, name="bench-commands", daemon=True).start()
    server.run(sockets=[listener])


# ----------------------------------------------------------------- the load generator


@dataclass(frozen=True, slots=True)
class Response:
    start: float
    end: float
    status: int
    version: str


@dataclass(frozen=True, slots=True)
class Upgrade:
    called: float
    switched: float
    returned: float
    version: str


class Child:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve"], cwd=ROOT, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        )
        assert self.proc.stdout is not None and self.proc.stdin is not None
        self.stdin, self.stdout = self.proc.stdin, self.proc.stdout
        line = self.stdout.readline()
        if not line.startswith("ready "):
            self.proc.kill()
            raise SystemExit(f"the server did not start: {line!r}")
        self.url = f"http://127.0.0.1:{int(line.split()[1])}"

    def ask(self, command: str) -> str:
        self.stdin.write(command + "\n")
        self.stdin.flush()
        return self.stdout.readline().strip()

    def replace(self, path: str) -> Upgrade:
        _, t0, ts, t1, version = self.ask(f"replace {path}").split()
        return Upgrade(float(t0), float(ts), float(t1),
                       "v1" if version.startswith("1.") else "v2")

    def close(self) -> None:
        try:
            self.stdin.close()
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


async def run(child: Child, client: object, seconds: float, upgrades: bool,
              start_version: str) -> tuple[list[Response], list[Upgrade], str]:
    """One run: the load for ``seconds``, with or without upgrades. Returns what was seen
    and the version serving at the end."""
    import httpx

    assert isinstance(client, httpx.AsyncClient)
    responses: list[Response] = []
    done: list[Upgrade] = []
    stop = asyncio.Event()

    async def worker() -> None:
        while not stop.is_set():
            start = time.monotonic()
            try:
                r = await client.get("/hello")
                match = HELLO.match(r.text)
                status, version = r.status_code, match.group(1) if match else "?"
            except httpx.HTTPError:
                status, version = 0, "?"
            responses.append(Response(start, time.monotonic(), status, version))

    async def upgrader() -> None:
        version = start_version
        while not stop.is_set():
            path = V2 if version == "v1" else V1
            up = await asyncio.to_thread(child.replace, path)
            done.append(up)
            version = up.version
            seen = len(responses)
            while len(responses) < seen + PACE and not stop.is_set():
                await asyncio.sleep(0.001)

    workers = [asyncio.create_task(worker()) for _ in range(CLIENTS)]
    extra = [asyncio.create_task(upgrader())] if upgrades else []
    await asyncio.sleep(seconds)  # the run's length: load is generated meanwhile
    stop.set()
    await asyncio.gather(*workers, *extra)
    end_version = done[-1].version if done else start_version
    return responses, done, end_version


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def upgrade_latencies(responses: list[Response], upgrades: list[Upgrade]) -> list[float]:
    out = []
    for up in upgrades:
        first = min((r.end for r in responses
                     if r.start >= up.called and r.version == up.version), default=None)
        if first is not None:
            out.append(first - up.called)
    return out


async def bench(rounds: int, seconds: float) -> int:
    import httpx

    child = Child()
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    failed = 0
    ratios50: list[float] = []
    ratios99: list[float] = []
    up_lat: list[float] = []
    calls: list[float] = []
    switches: list[float] = []
    count = 0
    try:
        async with httpx.AsyncClient(base_url=child.url, limits=limits, timeout=10.0) as client:
            version = "v1"
            await run(child, client, min(seconds, 0.5), False, version)  # warm-up
            for index in range(rounds):
                order = (False, True) if index % 2 == 0 else (True, False)
                lat: dict[bool, list[float]] = {}
                for upgrading in order:
                    responses, ups, version = await run(child, client, seconds, upgrading,
                                                        version)
                    failed += sum(r.status != 200 or r.version == "?" for r in responses)
                    lat[upgrading] = [r.end - r.start for r in responses]
                    if upgrading:
                        count += len(ups)
                        up_lat += upgrade_latencies(responses, ups)
                        calls += [u.returned - u.called for u in ups]
                        switches += [u.switched - u.called for u in ups]
                q50, q99 = percentile(lat[False], 0.5), percentile(lat[False], 0.99)
                u50, u99 = percentile(lat[True], 0.5), percentile(lat[True], 0.99)
                ratios50.append(u50 / q50)
                ratios99.append(u99 / q99)
                print(f"round {index + 1}: quiet p50 {q50 * 1e3:6.2f} ms p99 {q99 * 1e3:6.2f} ms"
                      f" | upgrades p50 {u50 * 1e3:6.2f} ms p99 {u99 * 1e3:6.2f} ms"
                      f" | ratio p50 {u50 / q50:4.2f}x p99 {u99 / q99:4.2f}x", flush=True)
        checked = child.ask("check")
    finally:
        child.close()

    def ms(values: list[float], q: float) -> str:
        return f"{percentile(values, q) * 1e3:7.2f} ms" if values else "    n/a"

    print()
    print(f"upgrades: {count} in {rounds} rounds; requests failed: {failed}; "
          f"after the run: {checked}")
    print(f"upgrade latency (replace call -> first v2 response): p50 {ms(up_lat, 0.5)}  "
          f"p90 {ms(up_lat, 0.9)}  max {ms(up_lat, 1.0)}")
    print(f"replace call -> v2 published (server side):         p50 {ms(switches, 0.5)}  "
          f"p90 {ms(switches, 0.9)}  max {ms(switches, 1.0)}")
    print(f"replace call (switch, drain, exit, leak check):      p50 {ms(calls, 0.5)}  "
          f"p90 {ms(calls, 0.9)}  max {ms(calls, 1.0)}")
    r50, r99 = statistics.median(ratios50), statistics.median(ratios99)
    print(f"RATIO p50 upgrades/quiet {CLIENTS} = {r50:.2f}x "
          f"(rounds: {', '.join(f'{r:.2f}' for r in ratios50)})")
    print(f"RATIO p99 upgrades/quiet {CLIENTS} = {r99:.2f}x "
          f"(rounds: {', '.join(f'{r:.2f}' for r in ratios99)})")
    verdict = "PASS" if r99 <= AIM_P99 and failed == 0 else "FAIL"
    print(f"RESULT: p99 during upgrades within {AIM_P99:g}x of p99 without "
          f"(and no failed request): {verdict}")
    return 0 if verdict == "PASS" else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 short rounds (smoke test)")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--seconds", type=float, default=None, help="length of one run")
    parser.add_argument("--check", action="store_true", help="exit 1 if the aim is missed")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve()
        return
    rounds = args.rounds or (2 if args.quick else 6)
    seconds = args.seconds or (0.6 if args.quick else 2.0)
    print(f"Python {platform.python_version()} on {platform.system()}, {os.cpu_count()} CPUs;"
          f" {CLIENTS} clients, {rounds} rounds of 2 x {seconds:g} s runs")
    status = asyncio.run(bench(rounds, seconds))
    sys.exit(status if args.check else 0)


if __name__ == "__main__":
    main()
