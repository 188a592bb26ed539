"""A service-wide upgrade across 4 and 16 workers: how long it takes, and what it does to
request latency.

Run (from the repository root; needs the ``workers`` extra: gunicorn, uvicorn, httpx)::

    python bench/bench_service.py             # 4 and 16 workers, 3 rounds each
    python bench/bench_service.py --quick     # 4 workers, 1 round (smoke run)
    python bench/bench_service.py --check     # exit 1 if p99 during > 2x without

The server is the example app under real gunicorn with N UvicornWorkers on 127.0.0.1,
every worker a livemod worker of service "web". 8 client threads request ``GET /hello``
back to back, each on a new connection (so requests spread over the workers). Each round
has two windows of the same length, in alternating order:

* **quiet**: no change;
* **upgrades**: ``hello`` upgraded across the service over and over (v1 -> v2 -> v1 ...),
  with :class:`livemod.service.Coordinator` in this process (what ``livemod --service web
  upgrade`` runs, without the interpreter start).

Measured: **command -> all committed** (``Coordinator.run``: begin, prepare in every worker,
the decision recorded, commit in every worker), median and max; request latency **p50 /
p99** per window; the verdict is the median over rounds of the p99 ratio upgrades/quiet.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the tests' server and load helpers

from web_service_support import MODULES, Load, WebService  # noqa: E402

V1, V2 = str(MODULES / "hello_v1.py"), str(MODULES / "hello_v2.py")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def window(load: Load, seconds: float, upgrade: bool, version: list[str],
           took: list[float]) -> list[float]:
    from livemod.service import Coordinator

    start = time.monotonic()
    end = start + seconds
    while time.monotonic() < end:
        if upgrade:
            to_v2 = version[0] == "v1"
            args = ({"name": "hello", "path": V2} if to_v2 else
                    {"name": "hello", "path": V1, "downgrade": True})
            outcome = Coordinator("web").run("upgrade", args)
            took.append(outcome.seconds)
            version[0] = "v2" if to_v2 else "v1"
            time.sleep(0.2)  # let some requests through between upgrades
        else:
            time.sleep(0.05)
    return [done - sent for sent, done, _, _ in load.since(start) if done <= end]


def run(workers: int, rounds: int, seconds: float) -> tuple[float, float]:
    web = WebService("gunicorn", workers=workers)
    os.environ["XDG_RUNTIME_DIR"] = web.runtime  # where the Coordinator finds the workers
    try:
        version, took = ["v1"], []
        ratios = []
        with Load(web.url, clients=8) as load:
            time.sleep(1.0)  # warm up
            for i in range(rounds):
                order = [False, True] if i % 2 == 0 else [True, False]
                lat = {u: window(load, seconds, u, version, took) for u in order}
                q, u = lat[False], lat[True]
                ratio = pct(u, 0.99) / pct(q, 0.99)
                ratios.append(ratio)
                print(f"  {workers:>2} workers round {i + 1}: quiet p50 {pct(q, .5) * 1e3:6.1f} "
                      f"p99 {pct(q, .99) * 1e3:6.1f} ms ({len(q)} req) | upgrades p50 "
                      f"{pct(u, .5) * 1e3:6.1f} p99 {pct(u, .99) * 1e3:6.1f} ms ({len(u)} req)"
                      f" | p99 ratio {ratio:.2f}", flush=True)
        assert not load.failures, load.failures[:3]
        med = statistics.median(took)
        print(f"RATIO p99-upgrades/quiet {workers} {statistics.median(ratios):.2f}")
        print(f"RESULT: {workers} workers: command -> all committed median "
              f"{med * 1e3:.0f} ms, max {max(took) * 1e3:.0f} ms over {len(took)} upgrades; "
              f"0 failed requests of {load.count()}")
        return statistics.median(ratios), med
    finally:
        web.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    sizes = (4,) if args.quick else (4, 16)
    rounds, seconds = (1, 2.0) if args.quick else (3, 5.0)
    worst = 0.0
    for n in sizes:
        ratio, _ = run(n, rounds, seconds)
        worst = max(worst, ratio)
    if args.check and worst > 2.0:
        print(f"FAIL: p99 during upgrades is {worst:.2f}x without (aim: <= 2x)")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
