"""Switching threads quickly while a module operation runs.

Under load, every hand-off of the GIL a module operation needs -- a file read, a managed
thread started or joined, a call in flight that must finish -- waits for the busy threads'
switch intervals (5 ms each by default, so 40 ms with 8 CPU-bound callers, several times
per operation). Measured: a reload of a module with two managed threads under 8 calling
threads took a median of 1.2 s at the default interval and 0.2 s at 100 us. So ``replace``
and ``rmmod`` lower the interval while they run and put it back afterwards.

The interval is process-wide. Operations of several hosts overlap, so one counter says how
many run: the first lowers it, the last restores what it found -- unless someone else
changed it meanwhile, whose setting then stands.

A full garbage collection is the exception (``collecting``): the collector holds the GIL
from start to end, so a short interval only makes every waiting thread wake up to ask for
it 10,000 times a second, taking CPU from the collector. During the leak check's collection
the interval goes to ``COLLECT`` (if an operation lowered it and it is still ours) and back
afterwards. Measured, a threaded reload under 8 callers: median 288 -> 211 ms, p90 454 ->
347 ms (bench/bench_reload.py shows the whole reload).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

__all__ = ["COLLECT", "QUICK", "collecting", "quick_switching"]

#: The interval (seconds) while a module operation runs.
QUICK: Final = 1e-4
#: The interval while an operation's leak check collects (see the module docstring).
COLLECT: Final = 1e-3

#: Protects: ``_state`` (how many operations run, the interval found, the one in force as
#: we set it, the quick one as asked for, how many collections have raised it).
_lock: Final = threading.Lock()
_state: list[float] = [0, 0.0, 0.0, 0.0, 0]


@contextmanager
def quick_switching() -> Iterator[None]:
    with _lock:
        if _state[0] == 0:
            found = sys.getswitchinterval()
            _state[1] = found
            _state[3] = min(found, QUICK)  # as asked: reading it back would lose a µs
            sys.setswitchinterval(_state[3])
            _state[2] = sys.getswitchinterval()  # as stored (whole microseconds)
        _state[0] += 1
    try:
        yield
    finally:
        with _lock:
            _state[0] -= 1
            if _state[0] == 0 and sys.getswitchinterval() == _state[2]:
                sys.setswitchinterval(_state[1])


@contextmanager
def collecting() -> Iterator[None]:
    """Around a full collection: a longer interval (never longer than the one the first
    operation found), if an operation set the one in force."""
    with _lock:
        mine = _state[4] > 0 or (_state[0] > 0 and sys.getswitchinterval() == _state[2])
        if mine:
            if _state[4] == 0:
                sys.setswitchinterval(max(_state[3], min(COLLECT, _state[1])))
                _state[2] = sys.getswitchinterval()
            _state[4] += 1
    try:
        yield
    finally:
        if mine:
            with _lock:
                _state[4] -= 1
                # Still ours, and an operation still runs (the last one to end restored
                # the interval it found already): back to the quick one.
                if _state[4] == 0 and _state[0] > 0 and sys.getswitchinterval() == _state[2]:
                    sys.setswitchinterval(_state[3])
                    _state[2] = sys.getswitchinterval()
