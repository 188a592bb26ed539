"""Soak: load/unload one module that takes every managed resource, many times over.

Run::

    python bench/bench_soak.py               # 10,000 cycles per phase
    python bench/bench_soak.py --quick       # 300 cycles per phase (smoke test)
    python bench/bench_soak.py --cycles 2000 --leak-check

The module (written to a temporary folder) takes, in ``init``: a hook implementation, an
export, a managed thread, two timers (``every`` and a far ``call_later``), executor work
(``submit``), a context manager (``enter``), ``on_exit``, ``atexit``, a logging handler and a
logging filter, a warnings filter, ``sys.excepthook`` / ``threading.excepthook``, a
``sys.meta_path`` finder, a ``copyreg`` reducer, a codec search function, a monkeypatch, a
signal handler (phase 1 only: it must be installed from the main thread), and a pin that the
benchmark releases before each unload. Phase 2 loads the same file into a host used from an
asyncio loop (``ainsmod`` / ``armmod``) with an async ``init`` that also takes
``create_task`` and ``enter_async`` and registers a coroutine hook implementation; its timers
then run on the loop.

Measured, per phase: RSS (``/proc/self/statm``) and ``tracemalloc`` current size before the
first cycle, after a warm-up, and at the end; growth per 1,000 cycles after the warm-up; and
leaked module objects. By default the hosts run with ``leak_check=False`` (no full
``gc.collect()`` per unload, which would dominate the run), and the benchmark checks leaks
itself: it keeps a weak reference to every instance's module object and its hook function,
and counts the ones still alive after one ``gc.collect()`` at the end (must be 0).
``--leak-check`` runs the hosts' own check on every unload as well (slower) and reports
``host.leaks()``. The script exits 1 if anything leaked or a global was not restored.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import codecs
import collections
import contextlib
import copyreg
import gc
import logging
import os
import platform
import signal
import sys
import tempfile
import textwrap
import threading
import time
import tracemalloc
import warnings
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import livemod

SOAK_SOURCE = '''
"""Soak module: takes every managed resource livemod offers, and gives them all back."""
__livemod__ = {
    "name": "soak",
    "version": "1.0.0",
    "params": {
        "use_signal": {"type": "bool", "default": False},
        "use_async": {"type": "bool", "default": False},
    },
}

import asyncio
import codecs
import logging
import signal
import sys

import soak_target


class Resource:
    def __enter__(self):
        soak_target.open_contexts += 1
        return self

    def __exit__(self, *exc):
        soak_target.open_contexts -= 1


class AsyncResource:
    async def __aenter__(self):
        soak_target.open_contexts += 1
        return self

    async def __aexit__(self, *exc):
        await asyncio.sleep(0)
        soak_target.open_contexts -= 1


class Handler(logging.Handler):
    def emit(self, record):
        pass


class Finder:
    def find_spec(self, *args):
        return None


class Reduced:
    pass


def reduce_it(obj):
    return (Reduced, ())


def search(name):
    soak_target.codec_asked += 1
    return None


def handle(x):
    return x + 1


async def ahandle(x):
    await asyncio.sleep(0)
    return x + 1


def work(x):
    return x * 2


def tick():
    soak_target.ticks += 1


def worker(stopping):
    stopping.wait()


def on_signal(signum, frame):
    pass


def at_exit():
    pass


def excepthook(*args):
    pass


def keep(record):
    return True


async def poll():
    while True:
        await asyncio.sleep(3600)


def take_common(mod):
    mod.hook("soak.call").add(handle)
    mod.export("handle", handle)
    mod.export("module", sys.modules[__name__])
    mod.export("pin", mod.pin)
    mod.thread(worker, mod.stopping, name="soak-worker")
    mod.every(3600, tick)
    mod.call_later(3600, tick)
    mod.submit(work, 21)
    mod.enter(Resource())
    mod.on_exit(tick)
    mod.atexit(at_exit)
    mod.log_handler(Handler(), "soak.app")
    mod.log_filter(keep, "soak.app")
    mod.warnings_filter("ignore", message="soak-warning")
    mod.excepthook(excepthook)
    mod.threading_excepthook(excepthook)
    mod.meta_path(Finder(), index=len(sys.meta_path))
    mod.copyreg(Reduced, reduce_it)
    mod.codec(search)
    mod.patch(soak_target, "value", handle)
    if mod.params.use_signal:
        mod.signal(signal.SIGUSR1, on_signal)


async def ainit(mod):
    take_common(mod)
    mod.create_task(poll(), name="soak-poll")
    await mod.enter_async(AsyncResource())
    mod.hook("soak.acall").add(ahandle)


def init(mod):
    if mod.params.use_async:
        return ainit(mod)
    take_common(mod)
'''

TARGET_SOURCE = '''
"""Test-owned globals the soak module patches and counts in."""
value = "original"
open_contexts = 0
ticks = 0
codec_asked = 0
'''


class Packet:
    """What the benchmark pins through the module (released before each unload)."""


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@dataclass
class Sample:
    label: str
    cycles: int
    rss: int
    traced: int


def sample(label: str, cycles: int) -> Sample:
    gc.collect()
    return Sample(label, cycles, rss_bytes(), tracemalloc.get_traced_memory()[0])


class Watch:
    """Counts objects watched and objects collected, with ``weakref.finalize``: a finalizer
    leaves the registry when its object dies, so watching 10,000 instances costs nothing
    once they are gone (a list of weak references would itself grow per cycle)."""

    def __init__(self) -> None:
        self.watched = 0
        self.collected = 0

    def add(self, obj: object) -> None:
        self.watched += 1
        weakref.finalize(obj, self._dead)

    def _dead(self) -> None:
        self.collected += 1

    def alive(self) -> int:
        return self.watched - self.collected


@dataclass
class Phase:
    name: str
    samples: list[Sample]
    watch: Watch
    seconds: float
    host_leaks: int | None
    taints: list[str]

    def alive(self) -> int:
        return self.watch.alive()


def globals_snapshot() -> dict[str, object]:
    """What the module's wrappers touch, as comparable values."""
    return {
        "signal": signal.getsignal(signal.SIGUSR1),
        "excepthook": sys.excepthook,
        "threading.excepthook": threading.excepthook,
        "meta_path": list(sys.meta_path),
        "warnings.filters": len(warnings.filters),
        "soak.app handlers": list(logging.getLogger("soak.app").handlers),
        "soak.app filters": list(logging.getLogger("soak.app").filters),
        "copyreg": len(copyreg.dispatch_table),
        "threads": sorted(t.name for t in threading.enumerate() if t.name.startswith("soak")),
    }


def one_cycle(host: livemod.Host, path: str, watch: Watch, main: bool) -> None:
    m = host.insmod(path, use_signal=main)
    assert host.hook("soak.call")(1) == [2]
    watch.add(m.exports["module"])
    watch.add(m.exports["handle"])
    packet = Packet()
    m.pin(packet)
    del packet  # the pin is released by its weakref callback, before the unload
    host.rmmod("soak")


async def one_async_cycle(host: livemod.Host, path: str, watch: Watch) -> None:
    m = await host.ainsmod(path, use_async=True)
    assert await host.hook("soak.acall").acall(1) == [2]
    assert await host.hook("soak.call").acall(1) == [2]
    watch.add(m.exports["module"])
    watch.add(m.exports["handle"])
    packet = Packet()
    m.pin(packet)
    del packet
    await host.armmod("soak")


def run_phase(
    name: str, cycles: int, warmup: int, leak_check: bool,
    cycle: Callable[[livemod.Host, Watch], None] | None = None,
    acycle: Callable[[livemod.Host, Watch], Awaitable[None]] | None = None,
) -> Phase:
    watch = Watch()
    samples = [sample("before", 0)]
    started = time.perf_counter()
    host = livemod.Host(leak_check=leak_check, timeout=10.0)
    if cycle is not None:
        for i in range(cycles):
            cycle(host, watch)
            if i + 1 == warmup:
                samples.append(sample("after warm-up", warmup))
        host.close()
    elif acycle is not None:
        async def main() -> None:
            async with host:
                for i in range(cycles):
                    await acycle(host, watch)
                    if i + 1 == warmup:
                        samples.append(sample("after warm-up", warmup))

        asyncio.run(main())
    seconds = time.perf_counter() - started
    samples.append(sample("end", cycles))
    leaks = len(host.leaks()) if leak_check else None
    taints = [f"{t.flag}: {t.reason}" for t in host.tainted]
    return Phase(name, samples, watch, seconds, leaks, taints)


def kib(n: float) -> str:
    return f"{n / 1024:,.0f} KiB"


def report(phase: Phase) -> None:
    print(f"\n{phase.name}: {phase.samples[-1].cycles:,} cycles in {phase.seconds:.1f} s "
          f"({phase.seconds / max(phase.samples[-1].cycles, 1) * 1000:.2f} ms per cycle)")
    print(f"  {'point':<15}{'cycles':>8}{'RSS':>14}{'tracemalloc':>16}")
    for s in phase.samples:
        print(f"  {s.label:<15}{s.cycles:>8,}{kib(s.rss):>14}{kib(s.traced):>16}")
    warm, end = phase.samples[-2], phase.samples[-1]
    span = end.cycles - warm.cycles
    if span > 0:
        per = 1000 / span
        print(f"  growth per 1,000 cycles after warm-up: RSS {kib((end.rss - warm.rss) * per)}, "
              f"tracemalloc {kib((end.traced - warm.traced) * per)}")
    print(f"  module objects still alive (of {phase.watch.watched:,} watched: every "
          f"instance's module object and hook function): {phase.alive()}")
    if phase.host_leaks is not None:
        print(f"  host.leaks(): {phase.host_leaks}")
    print(f"  host taints: {len(phase.taints)}")
    for reason, count in collections.Counter(phase.taints).most_common(5):
        print(f"    {count} x {reason}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=10_000, help="cycles per phase")
    parser.add_argument("--quick", action="store_true", help="300 cycles per phase")
    parser.add_argument("--leak-check", action="store_true",
                        help="also run the hosts' own leak check on every unload (slower)")
    args = parser.parse_args()
    cycles = 300 if args.quick else args.cycles
    warmup = max(1, min(1000, cycles // 10))
    main_thread = threading.current_thread() is threading.main_thread()

    print(f"livemod soak benchmark: Python {platform.python_version()} "
          f"({platform.python_implementation()}), {platform.system()}, "
          f"{os.cpu_count()} CPUs; {cycles:,} cycles per phase, warm-up {warmup:,}")
    print(f"leak check: {'the hosts own (leak_check=True) and ' if args.leak_check else ''}"
          f"weak references to every instance's module object, checked at the end "
          f"({'' if args.leak_check else 'hosts run with leak_check=False; '}"
          f"one gc.collect() before counting)")
    print(f"signal handler: {'yes (main thread)' if main_thread else 'no (not the main thread)'}")

    with tempfile.TemporaryDirectory(prefix="livemod-soak-") as tmp:
        folder = Path(tmp)
        (folder / "soak.py").write_text(textwrap.dedent(SOAK_SOURCE))
        (folder / "soak_target.py").write_text(textwrap.dedent(TARGET_SOURCE))
        sys.path.insert(0, tmp)
        import soak_target

        path = str(folder / "soak.py")
        atexit_before = atexit._ncallbacks()  # grows on register, never shrinks: info only
        livemod.Host().close()  # the first host installs livemod's meta-path finder for good
        before = globals_snapshot()
        tracemalloc.start()
        phases = [
            run_phase("phase 1: sync host (insmod / rmmod)", cycles, warmup, args.leak_check,
                      cycle=lambda h, w: one_cycle(h, path, w, main_thread)),
            run_phase("phase 2: asyncio host (ainsmod / armmod, create_task, enter_async)",
                      cycles, warmup, args.leak_check,
                      acycle=lambda h, w: one_async_cycle(h, path, w)),
        ]
        tracemalloc.stop()
        gc.collect()
        for phase in phases:
            report(phase)
        after = globals_snapshot()
        changed = [k for k in before if before[k] != after[k]]
        asked = soak_target.codec_asked
        with contextlib.suppress(LookupError):  # would ask any search function left behind
            codecs.lookup("soak-no-such-codec")
        if soak_target.codec_asked != asked:
            changed.append("codecs search function")
        restored = (
            not changed and soak_target.value == "original" and soak_target.open_contexts == 0
        )
        print(f"\nglobals restored after {2 * cycles:,} cycles: "
              f"{'yes' if restored else 'NO: ' + ', '.join(changed)}")
        print(f"atexit slots used (CPython never shrinks the table; info only): "
              f"{atexit._ncallbacks() - atexit_before:,}")
        leaked = sum(p.alive() for p in phases) + sum(p.host_leaks or 0 for p in phases)
        print(f"LEAKED module objects: {leaked}")
        sys.path.remove(tmp)
    return 0 if leaked == 0 and restored else 1


if __name__ == "__main__":
    sys.exit(main())
