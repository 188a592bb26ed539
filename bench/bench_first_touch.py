"""A thread's first read of a dict it does not own, while other threads are busy.

On CPython 3.13's free-threaded build the first ``dict.get`` on such a dict (and on any
module's ``__dict__``) waits for the other running threads; ``in`` plus a subscript
(``livemod._nsget.ns_get``, what the unload path uses) does not. Starting a thread pays a
similar wait. On the GIL builds both reads cost about the same. This script measures, with
0, 2 and 8 threads spinning in pure Python beside it:

* ``get``: wall time of the first ``d.get("__name__")`` on each of ``--dicts`` fresh module
  namespaces, per dict;
* ``ns_get``: the same with ``ns_get`` on as many other fresh namespaces;
* ``thread``: one ``Thread(...).start()`` and ``join()`` of a thread that does nothing.

Wall time, because the wait is spent blocked, not on the CPU; medians of ``--rounds``
interleaved rounds. Printed: ``RATIO get/ns_get <busy>`` and ``RATIO thread busy/idle
<busy>``. Always exits 0.

    python bench/bench_first_touch.py [--rounds 5] [--dicts 8]
    python bench/bench_first_touch.py --quick
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
import types

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))

from livemod._nsget import ns_get


def spin(stop: threading.Event) -> None:
    while not stop.is_set():
        [i for i in range(10)]


def first_reads(n: int, read: str) -> float:
    """Seconds per dict for the first read of ``n`` fresh module namespaces."""
    spaces = [vars(types.ModuleType(f"bench_first_touch_{i}")) for i in range(n)]
    start = time.perf_counter()
    for ns in spaces:
        if read == "get":
            ns.get("__name__")
        else:
            ns_get(ns, "__name__")
    return (time.perf_counter() - start) / n


def thread_start() -> float:
    start = time.perf_counter()
    t = threading.Thread(target=lambda: None)
    t.start()
    t.join()
    return time.perf_counter() - start


def measure(busy: int, rounds: int, dicts: int) -> dict[str, float]:
    stop = threading.Event()
    spinners = [threading.Thread(target=spin, args=(stop,), daemon=True) for _ in range(busy)]
    for t in spinners:
        t.start()
    found: dict[str, list[float]] = {"get": [], "ns_get": [], "thread": []}
    try:
        time.sleep(0.1 if busy else 0)  # let the spinners get going: a start, not a settle
        for r in range(rounds):
            order = ("get", "ns_get") if r % 2 == 0 else ("ns_get", "get")
            for read in order:
                found[read].append(first_reads(dicts, read))
            found["thread"].append(thread_start())
    finally:
        stop.set()
        for t in spinners:
            t.join()
    return {k: statistics.median(v) for k, v in found.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dicts", type=int, default=8)
    parser.add_argument("--quick", action="store_true", help="2 rounds of 2 dicts")
    args = parser.parse_args()
    rounds, dicts = (2, 2) if args.quick else (args.rounds, args.dicts)
    gil = getattr(sys, "_is_gil_enabled", lambda: True)()
    print(f"CPython {sys.version.split()[0]}, GIL {'on' if gil else 'off'}; "
          f"{rounds} rounds, {dicts} dicts each", flush=True)
    idle = None
    for busy in (0, 2, 8):
        m = measure(busy, rounds, dicts)
        idle = idle or m
        print(f"  {busy} busy threads: first get {m['get'] * 1e3:.3f} ms, first ns_get "
              f"{m['ns_get'] * 1e3:.3f} ms per dict; thread start+join "
              f"{m['thread'] * 1e3:.2f} ms", flush=True)
        print(f"RATIO get/ns_get {busy} {m['get'] / max(m['ns_get'], 1e-9):.1f}x")
        print(f"RATIO thread busy/idle {busy} {m['thread'] / max(idle['thread'], 1e-9):.1f}x",
              flush=True)


if __name__ == "__main__":
    main()
