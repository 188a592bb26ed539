"""What ``await hook.acall(x)`` at n=1 cannot get below: its parts, each against the loop.

Issue 12 asks for ``acall`` at most 1.5x ``[await f(x) for f in impls]``. This script
builds the generated n=1 dispatcher's shape up one part at a time, in plain Python with no
livemod code, and prints each against the same loop, side by side in one run (thread CPU
time, interleaved rounds, medians). The parts are what unload safety needs:

* ``coroutine``: ``async def a(x): return [(await f(x))]``, the second coroutine any
  awaited dispatcher costs;
* ``+ marker``: the read-side section (``append``/``pop`` of the snapshot's readers, the
  snapshot re-check) around it;
* ``+ keyword-only``: a ``concurrent=False`` keyword-only parameter (CPython specialises
  no call to a function that has one);
* ``+ loop learning``: ``asyncio.get_running_loop()`` and one identity compare, what
  ``acall`` once paid on every call so unload knew which loops to scan. It is kept here as
  the measure of what dropping it saved: unload now finds the loops in asyncio's own task
  registry (``livemod._aio``), and ``livemod`` should sit at ``+ keyword-only``;
* ``livemod``: the real ``hook.acall``.

    python bench/bench_acall_floor.py [--rounds 15] [--loops 20000]
    python bench/bench_acall_floor.py --quick     # 3 short rounds (a smoke test)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))

import livemod


async def impl(x: Any) -> Any:
    return x


IMPLS = (impl,)
_readers: list[None] = []


class _Hook:
    _snap: object = None
    _last_loop: object = None


_HOOK = _Hook()
_SNAP = _HOOK._snap
_get_loop = asyncio.get_running_loop


# The bodies below repeat on purpose: each is the literal shape being measured, and a
# shared helper would add a call to every one of them.


async def coroutine(x: Any) -> Any:
    return [(await impl(x))]


async def marker(x: Any) -> Any:
    _readers.append(None)
    try:
        if _HOOK._snap is _SNAP:
            return [(await impl(x))]
    finally:
        _readers.pop()
    return None


async def kwonly(x: Any, *, concurrent: bool = False) -> Any:
    if concurrent:
        return None
    _readers.append(None)
    try:
        if _HOOK._snap is _SNAP:
            return [(await impl(x))]
    finally:
        _readers.pop()
    return None


async def learning(x: Any, *, concurrent: bool = False) -> Any:
    loop = _get_loop()
    if loop is not _HOOK._last_loop:
        _HOOK._last_loop = loop
    if concurrent:
        return None
    _readers.append(None)
    try:
        if _HOOK._snap is _SNAP:
            return [(await impl(x))]
    finally:
        _readers.pop()
    return None


async def _loop(n: int) -> None:
    for _ in range(n):
        [await f(1) for f in IMPLS]


def _runner(fn: Callable[[Any], Awaitable[Any]]) -> Callable[[int], Awaitable[None]]:
    async def run(n: int) -> None:
        for _ in range(n):
            await fn(1)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--loops", type=int, default=20000)
    parser.add_argument("--quick", action="store_true", help="3 rounds of 2,000 calls")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.loops = 3, 2000
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "floor_mod.py")
        with open(path, "w") as f:
            f.write('__livemod__ = {"name": "floor_mod", "version": "1.0"}\n\n\n'
                    "async def impl(x):\n    return x\n\n\n"
                    'def init(mod):\n    mod.hook("h").add(impl)\n')
        with livemod.Host(leak_check=False) as host:
            host.insmod(path)
            hook = host.hook("h")
            candidates = {
                "coroutine": _runner(coroutine), "+marker": _runner(marker),
                "+keyword-only": _runner(kwonly), "+loop-learning": _runner(learning),
                "livemod": _runner(hook.acall),
            }
            ratios: dict[str, list[float]] = {name: [] for name in candidates}

            async def rounds() -> None:
                for _ in range(args.rounds):
                    start = time.thread_time()
                    await _loop(args.loops)
                    base = time.thread_time() - start
                    for name, run in candidates.items():
                        start = time.thread_time()
                        await run(args.loops)
                        ratios[name].append((time.thread_time() - start) / base)

            asyncio.run(rounds())
    print(f"# {sys.implementation.name} {sys.version.split()[0]}: n=1, against "
          f"[await f(x) for f in impls]; median of {args.rounds} rounds (thread CPU)")
    for name, values in ratios.items():
        print(f"RATIO {name + '/loop':20} 1 {statistics.median(values):.2f}")


if __name__ == "__main__":
    main()
