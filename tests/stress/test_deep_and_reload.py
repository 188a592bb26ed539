"""Unload and reload under many threads: a deep stack among 300 threads, threaded reloads.

1. 300 threads; the oldest runs inside the module, under 150 frames of library code and
   with 150 more frames of library code coming and going over it, while the main thread
   calls rmmod and replace again and again with ``sys.setswitchinterval(1e-6)``. The
   module reports to a test-owned recorder when its exit begins and how many calls are
   inside it then: exit must never begin while the thread is inside.
2. 50 reloads (more with LIVEMOD_STRESS_SECONDS) of a module with two managed threads from
   its own file, while 8 threads call its hook: each reload is timed (printed, not
   asserted), and after each lsmod shows one version, LIVE.
"""

from __future__ import annotations

import statistics
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import livemod
from livemod import State

from ._support import install_recorder, stress_seconds, wait_until

pytestmark = pytest.mark.stress

DEEP = '''
"""Stays inside itself while library code above it comes and goes."""

__livemod__ = {{"name": "deep", "version": "{version}",
               "params": {{"token": {{"type": "int", "default": 0}}}}}}

import {recorder} as rec

TOKEN = [0]


def inside(library, stop):
    token = TOKEN[0]
    rec.enter(token)
    try:
        while not stop.is_set():
            library(150)  # 150 frames of library code over this frame, then back
    finally:
        rec.leave(token)


def init(mod):
    TOKEN[0] = mod.params.token
    rec.register(mod.params.token, inside)
    mod.export("inside", inside)
    mod.hook("deep.version").add(lambda: "{version}")


def exit(mod):
    rec.exiting(mod.params.token)
'''


def library(depth: int) -> int:
    """Library code: ``depth`` frames of it."""
    return library(depth - 1) + 1 if depth else 0


def under(depth: int, fn: Callable[[], object]) -> object:
    """Library code: ``depth`` frames of it under ``fn``."""
    return under(depth - 1, fn) if depth else fn()


def park(depth: int, release: threading.Event) -> None:
    if depth:
        park(depth - 1, release)
    else:
        release.wait(120)


#: With the GIL off, threads past faulthandler's 100th count as inside (livemod._quiesce:
#: later, never early), so v1 could finish only once the crowd ends: stay below 100 there.
CROWD = 299 if getattr(sys, "_is_gil_enabled", lambda: True)() is not False else 60


def one_round(host: livemod.Host, files: dict[str, Path], rec: Any, token: int,
              crowd: list[threading.Thread], release: threading.Event) -> None:
    stop = threading.Event()
    m = host.insmod(files["1.0.0"], token=token)
    inside = m.inside
    deep = threading.Thread(target=under, args=(150, lambda: inside(library, stop)),
                            name="deep", daemon=True)
    deep.start()
    if not crowd:  # 299 more, started after it: it is past the 100th in a dump
        crowd += [threading.Thread(target=park, args=(i % 40, release), daemon=True)
                  for i in range(CROWD)]
        for t in crowd:
            t.start()
    try:
        assert wait_until(lambda: bool(rec.inside.get(token)), 10)
        with pytest.raises(livemod.ModuleBusy, match="deep"):
            host.rmmod("deep", timeout=0.05)
        assert token not in rec.exit_began, "exit began while the deep thread was inside"
        v2 = host.replace("deep", files["2.0.0"], timeout=0.05, token=token + 1_000_000)
        assert host.hook("deep.version")() == ["2.0.0"]
        assert token not in rec.exit_began, "v1's exit began while the thread was inside"
    finally:
        stop.set()
        deep.join(10)
    assert wait_until(lambda: m.state is State.GONE, 10), "v1 was never finished"
    assert token in rec.exit_began
    host.rmmod("deep")
    assert v2.state is State.GONE


def test_exit_never_begins_while_a_deep_thread_is_inside(
    tmp_path: Path, fast_switching: None
) -> None:
    recorder_name, rec, cleanup = install_recorder(tmp_path)
    files = {v: tmp_path / f"deep_{v.replace('.', '_')}.py" for v in ("1.0.0", "2.0.0")}
    for version, file in files.items():
        file.write_text(textwrap.dedent(DEEP.format(version=version, recorder=recorder_name)))
    host = livemod.Host(timeout=5.0)
    release = threading.Event()
    crowd: list[threading.Thread] = []
    rounds = 0
    deadline = time.monotonic() + stress_seconds()
    try:
        while time.monotonic() < deadline:
            rounds += 1
            one_round(host, files, rec, rounds, crowd, release)
    finally:
        release.set()
        for t in crowd:
            t.join(10)
        host.close(timeout=5.0)
        cleanup()
    assert rec.overlap == [] and rec.late == []
    print(f"\n{rounds} rounds of rmmod + replace under a deep thread among 300 threads")


THREADED = '''
"""Two managed threads and a hook."""

__livemod__ = {"name": "busy2", "version": "1.0.0"}


def handle(x):
    return x + 1


def init(mod):
    mod.hook("busy2.h").add(handle)
    mod.thread(lambda: mod.stopping.wait(), name="busy2-a")
    mod.thread(lambda: mod.stopping.wait(), name="busy2-b")
'''


def test_reloading_a_threaded_module_under_calling_threads(tmp_path: Path) -> None:
    file = tmp_path / "busy2.py"
    file.write_text(textwrap.dedent(THREADED))
    host = livemod.Host(timeout=10.0)
    host.insmod(file)
    hook = host.hook("busy2.h")
    stop = threading.Event()
    errors: list[BaseException] = []
    calls = [0] * 8

    def call(i: int) -> None:
        try:
            while not stop.is_set():
                if hook(1) not in ([2], []):
                    raise AssertionError("a call saw both versions or a wrong one")
                calls[i] += 1
        except BaseException as exc:
            errors.append(exc)

    callers = [threading.Thread(target=call, args=(i,), daemon=True) for i in range(8)]
    for t in callers:
        t.start()
    reloads = max(50, int(50 * stress_seconds() / 8))
    took: list[float] = []
    try:
        for _ in range(reloads):
            started = time.perf_counter()
            host.replace("busy2")
            took.append(time.perf_counter() - started)
            rows = [(r.name, r.state) for r in host.lsmod()]
            assert rows == [("busy2", State.LIVE)], rows
    finally:
        stop.set()
        for t in callers:
            t.join(10)
        host.close(timeout=5.0)
    assert errors == []
    assert not [t for t in threading.enumerate() if t.name.startswith("busy2-")]
    ordered = sorted(took)
    p95 = ordered[int(0.95 * len(ordered))]
    print(f"\n{reloads} reloads under 8 callers ({sum(calls)} calls): median "
          f"{statistics.median(took) * 1e3:.1f} ms, p95 {p95 * 1e3:.1f} ms, max "
          f"{ordered[-1] * 1e3:.1f} ms (python {sys.version.split()[0]})")
