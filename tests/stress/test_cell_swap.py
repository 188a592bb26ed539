"""Rebinding a dispatcher's closure cell while other threads read it (``_snapshot.set_cell``).

An unload swaps a retired snapshot's ``leave`` cell while callers are in their ``finally``
reading it. On 3.13's free-threaded build the ``cell_contents`` setter does that without
the cell's lock and frees the old value while a reader may be taking a reference to it
(CPython gh-127271): this same race run with the setter instead of ``set_cell`` aborted
the interpreter in about one 3-second run of three on 3.13.5t ("PyMutex_Unlock: unlocking
mutex that is not locked", and a segmentation fault). It runs in a subprocess so that a
crash fails this test and not the whole session; on the GIL builds it checks the same
results.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from ._support import stress_seconds

pytestmark = [pytest.mark.stress, pytest.mark.race]

_RACE = textwrap.dedent('''
    import sys, threading, time
    from livemod._snapshot import set_cell

    def make(leave):
        def reader():
            return leave()
        return reader

    reader = make([1].copy)
    cell = reader.__closure__[0]
    stop = threading.Event()
    calls, bad = [0] * 4, []

    def run(i):
        while not stop.is_set():
            for _ in range(1000):
                got = reader()
                if type(got) is not list or len(got) > 1:
                    bad.append(got)
            calls[i] += 1000

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    end = time.monotonic() + float(sys.argv[1])
    swaps = 0
    while time.monotonic() < end:
        for _ in range(1000):
            set_cell(cell, [swaps].copy)  # a fresh bound method: the cell is its only owner
        swaps += 1000
    stop.set()
    for t in threads:
        t.join()
    print(swaps, sum(calls), len(bad))
''')


def test_a_cell_rebound_under_concurrent_readers_never_hands_out_a_freed_object() -> None:
    seconds = max(1.0, stress_seconds() / 4)
    done = subprocess.run([sys.executable, "-c", _RACE, str(seconds)], capture_output=True,
                          text=True, timeout=seconds + 60)
    assert done.returncode == 0, f"the race crashed ({done.returncode}):\n{done.stderr[-3000:]}"
    swaps, calls, bad = map(int, done.stdout.split())
    assert swaps > 0 and calls > 0, done.stdout  # both sides ran
    assert bad == 0, f"{bad} reads returned something other than a swapped-in function's result"
