"""What the registry scrub adds to a load/unload cycle, side by side in one run.

Two candidates, interleaved in rounds, each timed in thread CPU time (the machine is
shared): ``scrub`` is a plain insmod + rmmod of a small module that defines a class and a
function (so every scrubber runs, the singledispatch one included); ``noscrub`` is the same
cycle with the scrub and its load-time baseline replaced by no-ops. ``--modules N`` imports
N extra stdlib modules first (the scans grow with ``sys.modules``). Prints the median CPU
time per cycle and ``RATIO scrub/noscrub``.

    python bench/bench_scrub.py [--rounds 15] [--cycles 40] [--modules 0]
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

import livemod
from livemod import _scrub, _scrub_registries

MODULE = '''__livemod__ = {"name": "cycled", "version": "1"}
class Shape:
    pass
def area(shape):
    return 0
def init(mod):
    mod.hook("bench.scrub").add(area)
'''


def cycle_cost(host: livemod.Host, path: Path, cycles: int) -> float:
    start = time.thread_time()
    for _ in range(cycles):
        host.insmod(path)
        host.rmmod("cycled")
    return (time.thread_time() - start) / cycles


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--cycles", type=int, default=40)
    parser.add_argument("--modules", type=int, default=0)
    args = parser.parse_args()
    for name in sorted(sys.stdlib_module_names)[: args.modules]:
        if not name.startswith("_") and name not in ("antigravity", "this", "idlelib"):
            try:
                importlib.import_module(name)
            except Exception:  # a platform-specific module
                continue
    folder = Path(tempfile.mkdtemp())
    path = folder / "cycled.py"
    path.write_text(MODULE)
    host = livemod.Host(leak_check=False)
    real = (_scrub_registries.scrub_instance, _scrub.baseline)

    def off() -> None:
        _scrub_registries.scrub_instance = lambda *a, **k: ([], [])  # type: ignore[assignment]
        _scrub.baseline = lambda: {}  # type: ignore[assignment]

    def on() -> None:
        _scrub_registries.scrub_instance, _scrub.baseline = real  # type: ignore[assignment]

    cycle_cost(host, path, args.cycles)  # warm up
    costs: dict[str, list[float]] = {"scrub": [], "noscrub": []}
    ratios = []
    for i in range(args.rounds):
        order = ["scrub", "noscrub"] if i % 2 == 0 else ["noscrub", "scrub"]
        got = {}
        for candidate in order:
            (on if candidate == "scrub" else off)()
            got[candidate] = cycle_cost(host, path, args.cycles)
            costs[candidate].append(got[candidate])
        ratios.append(got["scrub"] / got["noscrub"])
    on()
    host.close()
    print(f"sys.modules: {len(sys.modules)}")
    for candidate, values in costs.items():
        print(f"{candidate:8s} {statistics.median(values) * 1e3:7.3f} ms CPU per insmod+rmmod")
    print(f"RATIO scrub/noscrub {statistics.median(ratios):.2f} "
          f"(IQR {statistics.quantiles(ratios, n=4)[0]:.2f}-"
          f"{statistics.quantiles(ratios, n=4)[2]:.2f})")


if __name__ == "__main__":
    main()
