"""The cost of the unload's stack scan at 10, 100 and 1,000 threads.

Run (from the repository root)::

    python bench/bench_stackscan.py           # 15 rounds per thread count
    python bench/bench_stackscan.py --quick   # 5 rounds

Each of N threads is parked (``Event.wait``) under 20 frames of plain Python code, as the
threads of a thread-pool server sit in their libraries. Timed, interleaved in rounds:

* **scan**: ``running_in`` as an unload calls it (every frame of every thread, read with
  automatic collection off, matched by namespace; nothing found, so every frame is read);
* **faulthandler**: the reader the scan used before (one ``faulthandler`` dump of at most
  100 frames of at most 100 threads, parsed), for comparison: it sees at most 100 threads.

Printed: median ms per scan and its thread CPU time, microseconds per thread, and the
ratio scan / faulthandler within each round (median). No threshold; exit 0.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time

from livemod._quiesce import _Scratch, running_in

DEPTH = 20


def park(depth: int, event: threading.Event) -> None:
    if depth:
        park(depth - 1, event)
    else:
        event.wait()


def timed(fn: object) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.thread_time()
    fn()  # type: ignore[operator]
    return time.perf_counter() - wall, time.thread_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    rounds = 5 if args.quick else 15
    print(f"CPython {sys.version.split()[0]}, {DEPTH} frames per parked thread")
    print(f"{'threads':>8} {'scan ms':>9} {'scan cpu ms':>12} {'us/thread':>10} "
          f"{'faulthandler ms':>16} {'scan/fh':>8}")
    namespaces = {id({})}  # a namespace no frame runs in: the scan reads every frame
    for n in (10, 100, 1000):
        release = threading.Event()
        threads = [threading.Thread(target=park, args=(DEPTH, release), daemon=True)
                   for _ in range(n)]
        for t in threads:
            t.start()
        scan: list[float] = []
        cpu: list[float] = []
        fh: list[float] = []
        ratios: list[float] = []
        for r in range(rounds):
            pair = [("scan", lambda: running_in(namespaces, ())), ("fh", _Scratch.stacks)]
            if r % 2:
                pair.reverse()
            got = {name: timed(fn) for name, fn in pair}
            scan.append(got["scan"][0])
            cpu.append(got["scan"][1])
            fh.append(got["fh"][0])
            ratios.append(got["scan"][0] / got["fh"][0])
        release.set()
        for t in threads:
            t.join()
        med = statistics.median(scan)
        print(f"{n:>8} {med * 1e3:>9.2f} {statistics.median(cpu) * 1e3:>12.2f} "
              f"{med / n * 1e6:>10.1f} {statistics.median(fh) * 1e3:>16.2f} "
              f"{statistics.median(ratios):>8.2f}")
        print(f"RATIO scan/faulthandler {n} {statistics.median(ratios):.2f}")


if __name__ == "__main__":
    main()
