"""Many asyncio tasks ``await hook.acall(...)`` while another thread unloads and reloads modules.

The implementations are coroutines that suspend (``await asyncio.sleep(0)``) in the middle,
so a call stays in flight across event-loop turns while the unloading thread decides whether
the module is quiet. The same test-owned recorder as in the threaded race counts every call
that arrives at (or resumes in) a module after its exit began: that count must be 0, and no
task may be left pending afterwards.
"""

from __future__ import annotations

import asyncio
import gc
import random
import textwrap
import threading
import time
from pathlib import Path

import pytest

import livemod
from livemod import _leaks

from ._support import install_recorder, private_modules, stress_seconds

pytestmark = [pytest.mark.stress, pytest.mark.race]

TASKS = 64
HOOK = "astress.call"

_SOURCE = '''
"""Async stress module {name}."""

__livemod__ = {{
    "name": "{name}",
    "version": "1.0.0",
    "params": {{"token": {{"type": "int", "default": 0}}}},
}}

import asyncio

import {recorder} as rec


def _make(token, awaits):
    async def impl(x):
        rec.enter(token)
        try:
            for _ in range(awaits):
                await asyncio.sleep(0)
                rec.check(token, "resumed")
            return (token, x)
        finally:
            rec.leave(token)
    return impl


def _sync(token):
    def impl(x):
        rec.enter(token)
        try:
            return (token, x)
        finally:
            rec.leave(token)
    return impl


def init(mod):
    token = mod.params.token
    rec.register(token, _make)
    {register}
{tail}
'''

_KINDS = {
    # coroutine implementation, exit() marks the start of the exit
    "exit": ('mod.hook("{hook}").add(_make(token, 1))',
             "\n\ndef exit(mod):\n    rec.exiting(mod.params.token)\n"),
    # suspends three times; no exit(), the first managed cleanup marks it
    "long": ('mod.hook("{hook}").add(_make(token, 3))\n'
             "    mod.on_exit(lambda: rec.exiting(token))", ""),
    # a plain function on an async hook (acall accepts both)
    "sync": ('mod.hook("{hook}").add(_sync(token))',
             "\n\ndef exit(mod):\n    rec.exiting(mod.params.token)\n"),
}

KINDS = ("exit", "long", "sync", "exit", "long")


def write_modules(folder: Path, recorder: str) -> list[Path]:
    paths = []
    for i, kind in enumerate(KINDS):
        register, tail = _KINDS[kind]
        source = _SOURCE.format(
            name=f"arace{i}", recorder=recorder,
            register=register.format(hook=HOOK), tail=tail,
        )
        path = folder / f"arace{i}.py"
        path.write_text(textwrap.dedent(source).lstrip())
        paths.append(path)
    return paths


@pytest.fixture
def recorder(tmp_path: Path):  # type: ignore[no-untyped-def]
    name, module, cleanup = install_recorder(tmp_path)
    yield name, module
    cleanup()


@pytest.mark.usefixtures("fast_switching")
@pytest.mark.parametrize("api", ["thread", "async"])
def test_no_async_call_reaches_a_module_after_its_exit_began(
    tmp_path: Path, recorder: tuple[str, object], api: str
) -> None:
    """``thread``: the synchronous API from a worker thread (``run_in_executor``), so the
    host is never attached to the loop. ``async``: ``await host.ainsmod/armmod`` from a task
    on the same loop. Either way the host scans the loop's tasks while it waits (asking the
    loop, which it finds in asyncio's task registry)."""
    name, rec = recorder
    paths = write_modules(tmp_path, name)
    before = private_modules()
    stats = asyncio.run(_race(paths, rec, api, stress_seconds() / 2))
    assert rec.late == [], f"calls reached a module after its exit began: {rec.late[:10]}"  # type: ignore[attr-defined]
    assert rec.overlap == [], f"exit began while calls were inside: {rec.overlap[:10]}"  # type: ignore[attr-defined]
    assert set(rec.started) == set(rec.exit_began)  # type: ignore[attr-defined]
    assert private_modules() <= before
    gc.collect()
    if _leaks.unverifiable() is None:  # 3.13t: unloaded code is immortal, see _leaks
        alive = [r for r in rec.code if r() is not None]  # type: ignore[attr-defined]
        assert not alive, f"{len(alive)} unloaded instances still alive after close()"
    assert stats["calls"] > 0 and stats["served"] > 0, stats
    # Enough cycles that the race was run, whatever the machine's load (a floor, not speed).
    assert stats["loads"] >= 10 and stats["unloads"] >= 5, stats
    print(f"\nasync race ({api}): {stats}")


async def _race(paths: list[Path], rec: object, api: str, seconds: float) -> dict[str, object]:
    # leak_check=False: its collection after every unload would halve the cycles; the
    # recorder's weak references check that every instance is collected in the end.
    host = livemod.Host(timeout=10.0, leak_check=False)
    hook = host.hook(HOOK)
    stop = threading.Event()
    counts = {"calls": 0, "served": 0, "concurrent": 0}
    loop = asyncio.get_running_loop()

    async def caller(i: int) -> None:
        x = 0
        while not stop.is_set():
            x += 1
            concurrent = (x + i) % 4 == 0
            results = await hook.acall(x, concurrent=concurrent)
            tokens = [t for t, _ in results]
            assert tokens == sorted(set(tokens)), f"out of order or repeated: {results}"
            assert all(arg == x for _, arg in results)
            counts["calls"] += 1
            counts["served"] += len(results)
            counts["concurrent"] += concurrent
            if not results:
                await asyncio.sleep(0)  # nothing loaded: let the loader thread in

    rnd = random.Random(99)
    live: dict[int, int] = {}
    done = {"loads": 0, "unloads": 0, "token": 0}

    def step_args() -> tuple[str, int, dict[str, object]]:
        """The next operation: ("insmod", index, params) or ("rmmod", index, options)."""
        if len(live) < 2 or (len(live) < len(paths) and rnd.random() < 0.5):
            index = rnd.choice([i for i in range(len(paths)) if i not in live])
            done["token"] += 1
            return "insmod", index, {"token": done["token"]}
        index = rnd.choice(sorted(live))
        options: dict[str, object] = {"wait": True, "timeout": 10.0} if rnd.random() < 0.5 else {}
        return "rmmod", index, options

    def account(op: str, index: int, args: dict[str, object]) -> None:
        if op == "insmod":
            live[index] = int(args["token"])  # type: ignore[call-overload]
            done["loads"] += 1
        else:
            assert live.pop(index) in rec.exit_began  # type: ignore[attr-defined]
            done["unloads"] += 1

    def cycles_in_thread() -> None:
        deadline = time.monotonic() + seconds
        try:
            while time.monotonic() < deadline:
                op, index, args = step_args()
                if op == "insmod":
                    host.insmod(paths[index], **args)
                else:
                    host.rmmod(f"arace{index}", **args)  # type: ignore[arg-type]
                account(op, index, args)
        finally:
            stop.set()

    async def cycles_on_loop() -> None:
        deadline = time.monotonic() + seconds
        try:
            while time.monotonic() < deadline:
                op, index, args = step_args()
                if op == "insmod":
                    await host.ainsmod(paths[index], **args)
                else:
                    await host.armmod(f"arace{index}", **args)  # type: ignore[arg-type]
                account(op, index, args)
        finally:
            stop.set()

    tasks = [asyncio.create_task(caller(i), name=f"caller-{i}") for i in range(TASKS)]
    try:
        if api == "thread":
            await loop.run_in_executor(None, cycles_in_thread)
        else:
            await cycles_on_loop()
    finally:
        stop.set()
        # Every caller finishes its current call and stops; any exception surfaces here.
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=30)
    if api == "thread":
        await loop.run_in_executor(None, host.close)
    else:
        await host.aclose()
    assert host.lsmod() == []
    pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    assert pending == [], f"tasks left pending: {pending}"
    assert host.tainted == ()
    return {**counts, "loads": done["loads"], "unloads": done["unloads"], "seconds": seconds,
            "taints": len(host.tainted)}


# ------------------------------------------------------------------------------------------
# A task suspended inside a module's code *outside* a hook call (awaiting a coroutine the
# module exported) is code of the module in flight (design.md: "found by scanning
# sys._current_frames() and the running asyncio tasks"). The host finds every running loop
# through asyncio's task registry, so a host driven only by the synchronous API from a
# worker thread, never told of the loop and never awaited on it, still sees the task.

_EXPORTER = '''
"""Exports a coroutine that suspends inside the module."""

__livemod__ = {"name": "exporter", "version": "1.0.0"}

STATE = {"exited": False, "late": 0}


async def work(event):
    await event.wait()
    if STATE["exited"]:
        STATE["late"] += 1
    return "done"


def init(mod):
    mod.export("work", work)
    mod.export("state", STATE)


def exit(mod):
    STATE["exited"] = True
'''


def _suspended_task_scenario(path: Path, api: str) -> tuple[str, dict[str, object]]:
    async def main() -> tuple[str, dict[str, object]]:
        host = livemod.Host()
        if api == "async":
            module = await host.ainsmod(path)
        else:
            module = host.insmod(path)
        state = module.exports["state"]
        event = asyncio.Event()
        task = asyncio.create_task(module.exports["work"](event), name="direct-caller")
        await asyncio.sleep(0)  # the task is now suspended at 'await event.wait()'
        loop = asyncio.get_running_loop()
        try:
            if api == "async":
                await host.armmod("exporter", timeout=0.2)
            else:
                await loop.run_in_executor(None, lambda: host.rmmod("exporter", timeout=0.2))
            outcome = "unloaded"
        except livemod.ModuleBusy as exc:
            outcome = f"busy: {exc.holders}"
        event.set()
        await task
        if api == "async":
            await host.aclose()
        else:
            await loop.run_in_executor(None, host.close)
        return outcome, state

    path.write_text(textwrap.dedent(_EXPORTER).lstrip())
    return asyncio.run(main())


def test_armmod_waits_for_a_task_suspended_in_an_exported_coroutine(tmp_path: Path) -> None:
    outcome, state = _suspended_task_scenario(tmp_path / "exporter.py", "async")
    assert state["late"] == 0, f"rmmod {outcome}; the task resumed in an exited module"
    assert outcome.startswith("busy") and "direct-caller" in outcome, outcome


def test_rmmod_from_a_thread_waits_for_a_task_suspended_in_an_exported_coroutine(
    tmp_path: Path,
) -> None:
    outcome, state = _suspended_task_scenario(tmp_path / "exporter.py", "thread")
    assert state["late"] == 0, f"rmmod {outcome}; the task resumed in an exited module"
    assert outcome.startswith("busy") and "direct-caller" in outcome, outcome
