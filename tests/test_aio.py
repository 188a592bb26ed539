"""asyncio hosts: the awaitable operations, async init/exit, async hooks, tasks in flight, and
the managed resources that live on the loop (_aio, _async_api, _context, Hook.acall).

pytest-asyncio is not used: each test runs its own loop with ``asyncio.run`` and asserts that
module code ran on *that* loop. Module files are written to ``tmp_path`` by each test.
"""

from __future__ import annotations

import asyncio
import gc
import textwrap
import threading
import time
import warnings
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import livemod
from livemod import State

pytestmark = pytest.mark.usefixtures("no_stray_threads")

Probe = Any


def write(folder: Path, name: str, source: str) -> str:
    path = folder / f"{name}.py"
    path.write_text(textwrap.dedent(source))
    return str(path)


async def until(predicate: Callable[[], object], timeout: float = 5.0, what: str = "") -> None:
    """The asyncio form of ``wait_for``: a bounded wait on a condition, never a settle-sleep."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        await asyncio.sleep(0.001)


def tags(probe: Probe, module: str) -> list[Any]:
    return [e[1] for e in probe.events if e[0] == module]


# ----------------------------------------------------------------- the awaitable host

HELLO = '''
    """Async init, exit and handover; one async hook implementation."""
    __livemod__ = {{"name": "ahello", "version": "{version}"}}

    import asyncio

    import lm_probe


    async def hello(x):
        await asyncio.sleep(0)
        return ("{version}", x)


    async def init(mod):
        lm_probe.record("ahello", "init", "{version}", asyncio.get_running_loop(),
                        mod.handover_state)
        await asyncio.sleep(0)
        mod.hook("a.hello").add(hello)


    async def handover(mod):
        await asyncio.sleep(0)
        return "state of {version}"


    async def exit(mod):
        await asyncio.sleep(0)
        lm_probe.record("ahello", "exit", "{version}", asyncio.get_running_loop())
'''

HELPER = '''
    """A plain module found on the modpath (amodprobe)."""
    __livemod__ = {"name": "ahelper"}

    import lm_probe


    def init(mod):
        mod.export("answer", lambda: 42)


    def exit(mod):
        lm_probe.record("ahelper", "exit")
'''


def test_async_with_host_and_every_awaitable_operation(tmp_path: Path, probe: Probe) -> None:
    v1 = write(tmp_path, "ahello", HELLO.format(version="1.0.0"))
    (tmp_path / "v2").mkdir()
    v2 = write(tmp_path / "v2", "ahello", HELLO.format(version="2.0.0"))
    write(tmp_path, "ahelper", HELPER)

    async def main() -> livemod.Host:
        loop = asyncio.get_running_loop()
        async with livemod.Host(modpath=[tmp_path], timeout=5.0) as host:
            m = await host.ainsmod(v1)
            assert m.state is State.LIVE
            assert probe.seen("ahello", "init") == [("ahello", "init", "1.0.0", loop, None)]
            assert await host.hook("a.hello").acall(1) == [("1.0.0", 1)]

            helper = await host.amodprobe("ahelper")
            assert helper.answer() == 42

            new = await host.areplace("ahello", v2)
            assert new.version == "2.0.0" and m.state is State.GONE
            assert probe.seen("ahello", "init", "2.0.0") == [
                ("ahello", "init", "2.0.0", loop, "state of 1.0.0")
            ]
            assert probe.seen("ahello", "exit") == [("ahello", "exit", "1.0.0", loop)]
            assert await host.hook("a.hello").acall(2) == [("2.0.0", 2)]

            await host.armmod("ahelper")
            assert probe.seen("ahelper", "exit") == [("ahelper", "exit")]
            assert [s.name for s in host.lsmod()] == ["ahello"]
        # ``async with`` closed it: v2's async exit ran on this loop too.
        assert probe.seen("ahello", "exit", "2.0.0") == [("ahello", "exit", "2.0.0", loop)]
        return host

    host = asyncio.run(main())
    assert host.closed and host.lsmod() == []
    assert host.leaks() == []
    assert host.tainted == ()


def test_aclose_unloads_everything_from_the_loop(tmp_path: Path, probe: Probe) -> None:
    path = write(tmp_path, "ahello", HELLO.format(version="1.0.0"))

    async def main() -> None:
        host = livemod.Host(timeout=5.0)
        await host.ainsmod(path)
        await host.aclose()
        assert host.closed and host.lsmod() == []
        assert tags(probe, "ahello") == ["init", "exit"]

    asyncio.run(main())


def test_a_host_belongs_to_one_loop(tmp_path: Path, probe: Probe) -> None:
    path = write(tmp_path, "ahello", HELLO.format(version="1.0.0"))
    host = livemod.Host(timeout=5.0)

    async def first() -> None:
        await host.ainsmod(path)

    async def second() -> None:
        with pytest.raises(livemod.LivemodError, match="another event loop"):
            await host.armmod("ahello")

    async def last() -> None:
        await host.aclose()

    # Two loops alive at once: the second may not take the host over.
    loop1 = asyncio.new_event_loop()
    try:
        loop1.run_until_complete(first())
        runner = threading.Thread(target=loop1.run_forever, name="loop1")
        runner.start()
        try:
            asyncio.run(second())
            asyncio.run_coroutine_threadsafe(last(), loop1).result(10)
        finally:
            loop1.call_soon_threadsafe(loop1.stop)
            runner.join(5)
    finally:
        loop1.close()
    assert tags(probe, "ahello") == ["init", "exit"]


# ------------------------------------------------------------------ async hooks

IMPL = '''
    """One implementation on hook 'a.h', async or not; coordinated through lm_probe.kept."""
    __livemod__ = {{"name": "{name}", "params": {{"prio": {{"type": "int", "default": 0}}}}}}

    import asyncio

    import lm_probe


    async def impl(x):
        kept = lm_probe.kept
        lm_probe.record("start", "{name}")
        try:
            if "{name}.set" in kept:
                kept["{name}.set"].set()
            if "{name}.wait" in kept:
                await kept["{name}.wait"].wait()
            else:
                await asyncio.sleep(0)
            if kept.get("{name}.raise"):
                raise ValueError("{name} fails on " + repr(x))
            return ("{name}", x)
        finally:
            lm_probe.record("end", "{name}")


    def sync_impl(x):
        lm_probe.record("start", "{name}")
        lm_probe.record("end", "{name}")
        return ("{name}", x)


    def init(mod):
        fn = sync_impl if "sync" in "{name}" else impl
        mod.hook("a.h").add(fn, priority=mod.params.prio)
'''


def load_impls(host: livemod.Host, folder: Path, *names: str) -> None:
    """Load one implementation module per name, in hook order (first name runs first)."""
    for prio, name in zip(range(len(names), 0, -1), names, strict=True):
        host.insmod(write(folder, name, IMPL.format(name=name)), prio=prio)


def test_acall_sequential_runs_each_to_completion_in_hook_order(
    host: livemod.Host, tmp_path: Path, probe: Probe
) -> None:
    load_impls(host, tmp_path, "a1", "sync2", "a3")
    results = asyncio.run(host.hook("a.h").acall("x"))
    assert results == [("a1", "x"), ("sync2", "x"), ("a3", "x")]
    assert probe.events == [
        ("start", "a1"), ("end", "a1"), ("start", "sync2"), ("end", "sync2"),
        ("start", "a3"), ("end", "a3"),
    ]


def test_acall_concurrent_runs_together_and_keeps_hook_order(
    host: livemod.Host, tmp_path: Path, probe: Probe
) -> None:
    load_impls(host, tmp_path, "a1", "a2", "a3")

    async def main() -> list[Any]:
        # a1 (first in order) waits for a2 to have started: sequentially that never happens.
        ev = asyncio.Event()
        probe.kept.update({"a1.wait": ev, "a2.set": ev})
        return await asyncio.wait_for(host.hook("a.h").acall(5, concurrent=True), 5)

    assert asyncio.run(main()) == [("a1", 5), ("a2", 5), ("a3", 5)]
    started = [e[1] for e in probe.events if e[0] == "start"]
    assert started == ["a1", "a2", "a3"]
    assert probe.events.index(("start", "a2")) < probe.events.index(("end", "a1"))


@pytest.mark.parametrize("concurrent", [False, True], ids=["sequential", "concurrent"])
def test_acall_isolate_leaves_the_failing_async_impl_out(
    tmp_path: Path, probe: Probe, concurrent: bool
) -> None:
    with livemod.Host(errors="isolate", timeout=5.0) as host:
        load_impls(host, tmp_path, "a1", "a2", "a3")
        probe.kept["a2.raise"] = True
        results = asyncio.run(host.hook("a.h").acall(1, concurrent=concurrent))
        assert results == [("a1", 1), ("a3", 1)]
        errors = {s.name: s.errors for s in host.lsmod()}
        assert errors == {"a1": 0, "a2": 1, "a3": 0}


@pytest.mark.parametrize("concurrent", [False, True], ids=["sequential", "concurrent"])
def test_acall_raise_policy_propagates(
    host: livemod.Host, tmp_path: Path, probe: Probe, concurrent: bool
) -> None:
    load_impls(host, tmp_path, "a1", "a2")
    probe.kept["a1.raise"] = True
    with pytest.raises(ValueError, match="a1 fails on 3"):
        asyncio.run(host.hook("a.h").acall(3, concurrent=concurrent))


def test_acall_concurrent_raise_leaves_no_implementation_running(
    tmp_path: Path, probe: Probe
) -> None:
    async def main() -> None:
        async with livemod.Host(timeout=5.0) as host:
            for name, prio in (("a1", 2), ("a2", 1)):
                await host.ainsmod(write(tmp_path, name, IMPL.format(name=name)), prio=prio)
            gate = asyncio.Event()
            probe.kept.update({"a1.raise": True, "a2.wait": gate})
            try:
                with pytest.raises(ValueError):
                    await host.hook("a.h").acall(0, concurrent=True)
                # The call is over: no implementation of it may still be running.
                assert ("end", "a2") in probe.events, "a2 still runs after acall raised"
            finally:
                gate.set()
                await until(lambda: ("end", "a2") in probe.events)

    asyncio.run(main())


def test_sync_call_of_a_hook_with_a_coroutine_impl_is_a_type_error(
    host: livemod.Host, tmp_path: Path, mod_path: Callable[[str], str]
) -> None:
    host.insmod(mod_path("asyncmod"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "coroutine was never awaited" either
        with pytest.raises(TypeError, match=r"'async\.h'.*asyncmod.*await hook\.acall"):
            host.hook("async.h")(1)
        gc.collect()
    # The same hook awaited works.
    assert asyncio.run(host.hook("async.h").acall(1)) == [("async", 1)]
    # A sync implementation beside the coroutine one: the error names only the async module.
    host.insmod(write(tmp_path, "syncimpl", '''
        __livemod__ = {"name": "syncimpl"}
        def init(mod):
            mod.hook("async.h").add(lambda x: ("sync", x), priority=5)
    '''))
    with pytest.raises(TypeError, match=r"\(from asyncmod\)"):
        host.hook("async.h")(2)
    assert asyncio.run(host.hook("async.h").acall(2)) == [("sync", 2), ("async", 2)]
    # Once the coroutine implementation is gone, the hook is callable synchronously again.
    host.rmmod("asyncmod")
    assert host.hook("async.h")(3) == [("sync", 3)]


# ---------------------------------------------------------------- tasks in flight

INFLIGHT = '''
    """An async hook implementation that stays suspended until the test releases it."""
    __livemod__ = {"name": "inflight"}

    import lm_probe


    async def handle(x):
        lm_probe.record("inflight", "entered", x)
        lm_probe.kept["entered"].set()
        await lm_probe.kept["release"].wait()
        lm_probe.record("inflight", "leaving", x)
        return x


    def init(mod):
        mod.hook("inflight.h").add(handle)
        mod.export("handle", handle)


    async def exit(mod):
        lm_probe.record("inflight", "exit")
'''


def test_armmod_waits_for_a_task_suspended_in_the_module(tmp_path: Path, probe: Probe) -> None:
    path = write(tmp_path, "inflight", INFLIGHT)

    async def main() -> None:
        async with livemod.Host(timeout=5.0) as host:
            probe.kept.update(entered=asyncio.Event(), release=asyncio.Event())
            await host.ainsmod(path)
            call = asyncio.create_task(host.hook("inflight.h").acall(7), name="caller")
            await asyncio.wait_for(probe.kept["entered"].wait(), 5)

            # A short timeout: the suspended call keeps it busy; rolled back, LIVE again.
            with pytest.raises(livemod.ModuleBusy) as busy:
                await host.armmod("inflight", timeout=0.2)
            holders = busy.value.holders
            assert "a call in flight on hook 'inflight.h'" in holders
            # The task is also placed in the module's code (its await chain is scanned).
            assert all(h.startswith(("a call in flight", "task 'caller' at inflight.py"))
                       for h in holders), holders
            assert host.lsmod()[0].state is State.LIVE
            assert not call.done()

            # Now a real unload: it waits while the task is suspended, exit only afterwards.
            rm = asyncio.create_task(host.armmod("inflight"))
            await until(lambda: host.lsmod()[0].state is State.GOING, what="GOING")
            assert await host.hook("inflight.h").acall(8) == []  # no new way in
            assert not rm.done() and not probe.seen("inflight", "exit")
            probe.kept["release"].set()
            assert await asyncio.wait_for(call, 5) == [7]
            await asyncio.wait_for(rm, 5)
            assert tags(probe, "inflight") == ["entered", "leaving", "exit"]
            assert host.lsmod() == []

    asyncio.run(main())


def test_a_task_running_an_export_directly_is_found_by_unload(
    tmp_path: Path, probe: Probe
) -> None:
    path = write(tmp_path, "inflight", INFLIGHT)

    async def main() -> None:
        async with livemod.Host(timeout=5.0) as host:
            probe.kept.update(entered=asyncio.Event(), release=asyncio.Event())
            m = await host.ainsmod(path)
            direct = asyncio.create_task(m.handle(1), name="direct")  # not through a hook
            await asyncio.wait_for(probe.kept["entered"].wait(), 5)
            with pytest.raises(livemod.ModuleBusy, match=r"task 'direct' at inflight\.py:\d+"):
                await host.armmod("inflight", timeout=0.2)
            probe.kept["release"].set()
            assert await direct == 1
            await host.armmod("inflight")
            assert tags(probe, "inflight") == ["entered", "leaving", "exit"]

    asyncio.run(main())


def test_a_task_awaiting_an_export_from_its_own_coroutine_is_found_by_unload(
    tmp_path: Path, probe: Probe
) -> None:
    path = write(tmp_path, "inflight", INFLIGHT)

    async def main() -> None:
        async with livemod.Host(timeout=5.0) as host:
            probe.kept.update(entered=asyncio.Event(), release=asyncio.Event())
            m = await host.ainsmod(path)

            async def request_handler() -> Any:  # application code, not the module's
                return await m.handle(2)

            task = asyncio.create_task(request_handler(), name="request")
            await asyncio.wait_for(probe.kept["entered"].wait(), 5)
            try:
                with pytest.raises(livemod.ModuleBusy, match=r"task 'request'"):
                    await host.armmod("inflight", timeout=0.2)
            finally:
                probe.kept["release"].set()
                await task
                if host.lsmod():
                    await host.armmod("inflight")
            assert tags(probe, "inflight") == ["entered", "leaving", "exit"]

    asyncio.run(main())


ANYLOOP = '''
    """Awaited on loops the host never sees: it sets each loop's exception handler too."""
    __livemod__ = {"name": "anyloop"}

    import asyncio


    def _on_error(loop, context):
        pass


    async def handle(entered, gate):
        asyncio.get_running_loop().set_exception_handler(_on_error)
        entered.set()
        await gate.wait()
        return "done"


    def init(mod):
        mod.hook("anyloop.h").add(handle)
        mod.export("handle", handle)
'''


def test_a_sync_host_sees_the_modules_tasks_on_every_loop(tmp_path: Path) -> None:
    """Two loops in their own threads await the module (one through ``acall``, one
    directly); the host is used only synchronously, from this thread. Unload must name both
    tasks -- they resume into the module's code -- and once they are done, unload takes
    back the exception handler the module set on each loop."""
    path = write(tmp_path, "anyloop", ANYLOOP)
    loops = [asyncio.new_event_loop() for _ in range(2)]
    threads = [threading.Thread(target=loop.run_forever, name=f"loop-{i}")
               for i, loop in enumerate(loops)]
    for thread in threads:
        thread.start()
    keepers: list[asyncio.Event] = []  # an app's loop always runs some task of its own
    host = livemod.Host(timeout=5.0)
    try:
        m = host.insmod(path)
        entered = [threading.Event(), threading.Event()]
        gates = [asyncio.Event(), asyncio.Event()]

        async def start(i: int, name: str, coro: Any) -> asyncio.Task[Any]:
            keeper = asyncio.Event()
            keepers.append(keeper)
            asyncio.get_running_loop().create_task(keeper.wait(), name=f"keeper-{i}")
            return asyncio.get_running_loop().create_task(coro, name=name)

        def on(i: int, coro: Any) -> Any:
            return asyncio.run_coroutine_threadsafe(coro, loops[i]).result(5)

        via_hook = on(0, start(0, "via-hook", host.hook("anyloop.h").acall(entered[0], gates[0])))
        direct = on(1, start(1, "direct", m.handle(entered[1], gates[1])))
        assert all(e.wait(5) for e in entered)
        line = textwrap.dedent(ANYLOOP).splitlines().index("    await gate.wait()") + 1
        with pytest.raises(livemod.ModuleBusy) as busy:
            host.rmmod("anyloop", timeout=0.2)
        assert {f"task 'via-hook' at anyloop.py:{line} in handle",
                f"task 'direct' at anyloop.py:{line} in handle"} <= set(busy.value.holders)
        assert [i.name for i in host.lsmod()] == ["anyloop"]
        assert all(loop.get_exception_handler() is not None for loop in loops)

        for i, gate in enumerate(gates):
            loops[i].call_soon_threadsafe(gate.set)

        async def result_of(task: asyncio.Task[Any]) -> Any:
            return await task

        assert on(0, result_of(via_hook)) == ["done"]
        assert on(1, result_of(direct)) == "done"
        host.rmmod("anyloop")
        assert [loop.get_exception_handler() for loop in loops] == [None, None]
    finally:
        host.close()
        for loop, keeper in zip(loops, keepers, strict=False):  # none if insmod failed
            loop.call_soon_threadsafe(keeper.set)
            loop.call_soon_threadsafe(loop.stop)
        for thread in threads:
            thread.join(5)
        for loop in loops:
            loop.close()


def test_asyncios_task_registry_is_found_on_this_cpython() -> None:
    """Unload finds loops through asyncio's private task registry; a CPython that moved it
    would leave unload blind to every loop but the host's, so this says so first."""
    from livemod import _aio

    assert _aio.registry_found()

    async def main() -> set[asyncio.AbstractEventLoop]:
        waiter = asyncio.create_task(asyncio.Event().wait())
        await asyncio.sleep(0)
        try:
            return _aio.running_loops()
        finally:
            waiter.cancel()

    loop = asyncio.new_event_loop()
    try:
        assert loop.run_until_complete(main()) == {loop}
    finally:
        loop.close()
    assert _aio.running_loops() == set()


TASKY = '''
    """Starts a managed task (from an async or a sync init) that runs until cancelled."""
    __livemod__ = {"name": "tasky", "params": {"async_init": {"type": "bool", "default": True}}}

    import asyncio

    import lm_probe


    async def poll():
        lm_probe.kept["polling"].set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            lm_probe.record("tasky", "cancelled", asyncio.get_running_loop())
            raise
        finally:
            await asyncio.sleep(0)  # only a task that is awaited gets past this
            lm_probe.record("tasky", "finally")


    def start(mod):
        task = mod.create_task(poll(), name="tasky-poll")
        lm_probe.record("tasky", "created", task.get_name())


    async def async_init(mod):
        start(mod)
        await asyncio.sleep(0)


    def init(mod):
        if mod.params.async_init:
            return async_init(mod)
        start(mod)


    def exit(mod):
        lm_probe.record("tasky", "exit")
'''


@pytest.mark.parametrize("async_init", [True, False], ids=["async-init", "sync-init"])
def test_the_modules_own_task_is_cancelled_and_awaited_at_unload(
    tmp_path: Path, probe: Probe, async_init: bool
) -> None:
    path = write(tmp_path, "tasky", TASKY)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        async with livemod.Host(timeout=5.0) as host:
            probe.kept["polling"] = asyncio.Event()
            await host.ainsmod(path, async_init=async_init)
            await asyncio.wait_for(probe.kept["polling"].wait(), 5)
            names = {t.get_name() for t in asyncio.all_tasks()}
            assert "tasky-poll" in names
            # The module's own task is not "in flight": the unload does not wait for it.
            await asyncio.wait_for(host.armmod("tasky", timeout=2.0), 5)
            assert tags(probe, "tasky") == ["created", "exit", "cancelled", "finally"]
            assert probe.seen("tasky", "cancelled") == [("tasky", "cancelled", loop)]
            assert "tasky-poll" not in {t.get_name() for t in asyncio.all_tasks()}
            assert host.leaks() == []

    asyncio.run(main())


def test_create_task_without_a_loop_is_a_clear_error(tmp_path: Path, probe: Probe) -> None:
    path = write(tmp_path, "tasky", TASKY)
    with livemod.Host(timeout=5.0) as host, warnings.catch_warnings():
        warnings.simplefilter("error")  # the refused coroutine is closed, not left unawaited
        with pytest.raises(livemod.InitError) as err:
            host.insmod(path, async_init=False)
        gc.collect()
        cause = err.value.__cause__
        assert isinstance(cause, TypeError)
        assert "'tasky'" in str(cause)
        assert "create_task needs the host's running event loop" in str(cause)
        assert "ainsmod" in str(cause)
        assert host.lsmod() == []


def test_async_init_without_a_loop_is_a_clear_error(tmp_path: Path, probe: Probe) -> None:
    path = write(tmp_path, "ahello", HELLO.format(version="1.0.0"))
    with livemod.Host(timeout=5.0) as host, warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(livemod.InitError, match="ahello") as err:
            host.insmod(path)
        gc.collect()
        assert isinstance(err.value.__cause__, TypeError)
        text = str(err.value.__cause__)
        assert "init of 'ahello' is a coroutine" in text
        assert "no running event loop" in text and "ainsmod" in text
        assert host.lsmod() == [] and probe.events == []


def test_sync_insmod_on_the_loops_own_thread_is_a_clear_error(
    tmp_path: Path, probe: Probe
) -> None:
    path = write(tmp_path, "ahello", HELLO.format(version="1.0.0"))

    async def main() -> None:
        async with livemod.Host(timeout=5.0) as host:
            with pytest.raises(livemod.InitError) as err:
                host.insmod(path)  # blocking call on the loop: async init cannot run
            assert "event loop's own thread" in str(err.value.__cause__)
            assert "await host.ainsmod" in str(err.value.__cause__)
            assert host.lsmod() == []

    asyncio.run(main())


# -------------------------------------------------------------------- timers

TIMERS = '''
    """A periodic timer and two one-shot timers (one far in the future)."""
    __livemod__ = {"name": "timers", "params": {"with_async": {"type": "bool", "default": False}}}

    import asyncio
    import threading

    import lm_probe


    def _where():
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        return threading.current_thread().name, loop


    def tick():
        lm_probe.kept["ticks"] = lm_probe.kept.get("ticks", 0) + 1
        lm_probe.kept["tick-at"] = _where()


    async def atick():
        await asyncio.sleep(0)
        lm_probe.kept["aticks"] = lm_probe.kept.get("aticks", 0) + 1


    def once():
        lm_probe.record("once", *_where())


    def never():
        lm_probe.record("never")


    def init(mod):
        mod.every(0.002, tick)
        if mod.params.with_async:
            mod.every(0.002, atick)
        mod.call_later(0.001, once)
        timer = mod.call_later(3600, never)
        mod.export("far", timer)
'''


def test_timers_without_a_loop_run_in_threads_and_stop_at_unload(
    host: livemod.Host, tmp_path: Path, probe: Probe, wait_for: Callable[..., Any]
) -> None:
    m = host.insmod(write(tmp_path, "timers", TIMERS))
    wait_for(lambda: probe.kept.get("ticks", 0) >= 3, what="3 ticks")
    wait_for(lambda: probe.seen("once"), what="the one-shot timer")
    assert probe.kept["tick-at"] == ("timers:tick", None)
    assert probe.seen("once") == [("once", "timers:once", None)]
    assert not m.far.cancelled
    alive = {t.name for t in threading.enumerate()}
    assert {"timers:tick", "timers:never"} <= alive

    started = time.monotonic()
    host.rmmod("timers")
    assert time.monotonic() - started < 2.0  # the one-hour timer did not hold the unload
    assert not {t.name for t in threading.enumerate()} & {"timers:tick", "timers:never"}
    ticks = probe.kept["ticks"]
    # A negative check needs time to pass: nothing is left that could fire, and nothing does.
    time.sleep(0.05)
    assert probe.kept["ticks"] == ticks
    assert not probe.seen("never")
    assert host.leaks() == []


def test_timers_on_the_loop_run_there_and_stop_at_unload(tmp_path: Path, probe: Probe) -> None:
    path = write(tmp_path, "timers", TIMERS)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        async with livemod.Host(timeout=5.0) as host:
            m = await host.ainsmod(path, with_async=True)
            await until(lambda: probe.kept.get("ticks", 0) >= 3, what="3 ticks")
            await until(lambda: probe.kept.get("aticks", 0) >= 3, what="3 async ticks")
            await until(lambda: probe.seen("once"), what="the one-shot timer")
            assert probe.kept["tick-at"] == (threading.current_thread().name, loop)
            assert probe.seen("once") == [("once", threading.current_thread().name, loop)]
            assert not m.far.cancelled
            timer_tasks = {t.get_name() for t in asyncio.all_tasks() if ":" in t.get_name()}
            assert {"timers:tick", "timers:atick", "timers:never"} <= timer_tasks

            await asyncio.wait_for(host.armmod("timers"), 5)
            left = {t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith("tim")}
            assert left == set()
            ticks, aticks = probe.kept["ticks"], probe.kept["aticks"]
            await asyncio.sleep(0.05)  # negative check: nothing can fire, nothing does
            assert (probe.kept["ticks"], probe.kept["aticks"]) == (ticks, aticks)
            assert not probe.seen("never")
            assert host.leaks() == []

    asyncio.run(main())


def test_a_timer_cancelled_early_stops_firing(
    host: livemod.Host, tmp_path: Path, probe: Probe, wait_for: Callable[..., Any]
) -> None:
    m = host.insmod(write(tmp_path, "timers", TIMERS))
    far = m.far
    far.cancel()
    assert far.cancelled
    wait_for(lambda: probe.kept.get("ticks", 0) >= 1)
    host.rmmod("timers")
    assert not probe.seen("never")


# ------------------------------------------------------------------ executor work

SUBMIT = '''
    """Executor work: a result, work that blocks in the module, work queued behind others."""
    __livemod__ = {"name": "submitter"}

    import threading

    import lm_probe


    def work(x):
        lm_probe.record("work", x, threading.current_thread().name)
        return x * 2


    def blocking():
        lm_probe.record("blocking", "in")
        lm_probe.gate("submit.inside").wait(10)


    def init(mod):
        mod.export("first", mod.submit(work, 21))
        mod.export("submit", mod.submit)
        mod.export("work", work)
        mod.export("blocking", blocking)
'''


def fill_workers(m: Any, gate: threading.Event) -> list[Any]:
    """Occupy the host's four workers with waits on ``gate`` (outside the module), each
    running before this returns: one still queued at the unload would be cancelled like the
    module's own work (it was, now and then, when the rmmod came first)."""
    running = threading.Semaphore(0)

    def block() -> bool:
        running.release()
        return gate.wait(10)

    blockers = [m.submit(block) for _ in range(4)]
    assert all(running.acquire(timeout=5) for _ in range(4)), "the workers did not start"
    return blockers


def test_submit_runs_in_the_hosts_workers_and_queued_work_is_cancelled_at_unload(
    host: livemod.Host, tmp_path: Path, probe: Probe, wait_for: Callable[..., Any]
) -> None:
    m = host.insmod(write(tmp_path, "submitter", SUBMIT))
    assert m.first.result(5) == 42
    [(_, _, worker)] = probe.seen("work", 21)
    assert worker.startswith(f"livemod-{host._id}-work")

    # Four workers: fill them with waits outside the module, then queue module work.
    pool_gate = probe.gate("pool")
    blockers = fill_workers(m, pool_gate)
    queued = m.submit(m.work, 99)
    assert not queued.done()
    host.rmmod("submitter")
    assert queued.cancelled()  # a cancelled future's function never runs
    pool_gate.set()
    assert [b.result(5) for b in blockers] == [True] * 4
    assert not probe.seen("work", 99)
    assert host.leaks() == []  # the cancelled work item was dropped by its worker


def test_queued_executor_work_does_not_make_the_unload_look_leaky(
    host: livemod.Host, tmp_path: Path, probe: Probe
) -> None:
    m = host.insmod(write(tmp_path, "submitter", SUBMIT))
    m.first.result(5)
    pool_gate = probe.gate("pool")
    blockers = fill_workers(m, pool_gate)
    queued = m.submit(m.work, 99)
    try:
        host.rmmod("submitter")
        assert queued.cancelled()
        assert host.tainted == ()
    finally:
        pool_gate.set()
        for b in blockers:
            b.result(5)


def test_executor_work_running_in_the_module_is_a_call_in_flight(
    host: livemod.Host, tmp_path: Path, probe: Probe, wait_for: Callable[..., Any]
) -> None:
    m = host.insmod(write(tmp_path, "submitter", SUBMIT))
    m.first.result(5)
    running = m.submit(m.blocking)
    wait_for(lambda: probe.seen("blocking", "in"))
    with pytest.raises(livemod.ModuleBusy, match=r"thread 'livemod-\d+-work[^']*' at submitter"):
        host.rmmod("submitter", timeout=0.2)
    probe.gate("submit.inside").set()
    running.result(5)
    host.rmmod("submitter")
    assert host.lsmod() == []


# ------------------------------------------------------------------ context managers

CONTEXTS = '''
    """Enters sync and async context managers; may fail after entering them."""
    __livemod__ = {"name": "contexts", "params": {"fail": {"type": "bool", "default": False}}}

    import asyncio

    import lm_probe


    class CM:
        def __init__(self, tag):
            self.tag = tag

        def __enter__(self):
            lm_probe.record("enter", self.tag)
            return self.tag

        def __exit__(self, *exc):
            lm_probe.record("exit", self.tag, exc)


    class ACM:
        def __init__(self, tag):
            self.tag = tag

        async def __aenter__(self):
            await asyncio.sleep(0)
            lm_probe.record("enter", self.tag)
            return self.tag

        async def __aexit__(self, *exc):
            await asyncio.sleep(0)
            lm_probe.record("exit", self.tag, exc, asyncio.get_running_loop())


    async def init(mod):
        assert mod.enter(CM("a")) == "a"
        assert await mod.enter_async(ACM("b")) == "b"
        assert mod.enter(CM("c")) == "c"
        assert await mod.enter_async(ACM("d")) == "d"
        if mod.params.fail:
            raise RuntimeError("init fails after entering four contexts")


    def exit(mod):
        lm_probe.record("exit-fn")
'''


@pytest.mark.parametrize("fail", [False, True], ids=["unload", "failed-init"])
def test_enter_and_enter_async_exit_in_reverse_order(
    tmp_path: Path, probe: Probe, fail: bool
) -> None:
    path = write(tmp_path, "contexts", CONTEXTS)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        async with livemod.Host(timeout=5.0) as host:
            if fail:
                with pytest.raises(livemod.InitError, match="four contexts"):
                    await host.ainsmod(path, fail=True)
            else:
                await host.ainsmod(path)
                assert [e[0] for e in probe.events] == ["enter"] * 4
                await host.armmod("contexts")
            none = (None, None, None)
            expected = [
                ("exit", "d", none, loop), ("exit", "c", none), ("exit", "b", none, loop),
                ("exit", "a", none),
            ]
            head = [] if fail else [("exit-fn",)]  # exit() only after a successful init
            assert probe.events[4:] == [*head, *expected]
            assert host.lsmod() == []

    asyncio.run(main())


def test_enter_in_a_sync_module_on_a_sync_host(
    host: livemod.Host, tmp_path: Path, probe: Probe
) -> None:
    import contextlib

    log: list[str] = []

    @contextlib.contextmanager
    def resource(tag: str) -> Any:
        log.append(f"open {tag}")
        try:
            yield tag
        finally:
            log.append(f"close {tag}")

    path = write(tmp_path, "syncctx", '''
        __livemod__ = {"name": "syncctx"}
        import lm_probe
        def init(mod):
            for tag in ("x", "y", "z"):
                mod.enter(lm_probe.kept["resource"](tag))
    ''')
    probe.kept["resource"] = resource
    host.insmod(path)
    assert log == ["open x", "open y", "open z"]
    host.rmmod("syncctx")
    assert log[3:] == ["close z", "close y", "close x"]


@pytest.mark.asserts_leak
def test_module_code_is_collected_after_an_async_unload(tmp_path: Path, probe: Probe) -> None:
    path = write(tmp_path, "tasky", TASKY)

    async def main() -> weakref.ref[Any]:
        async with livemod.Host(timeout=5.0) as host:
            probe.kept["polling"] = asyncio.Event()
            await host.ainsmod(path)
            await asyncio.wait_for(probe.kept["polling"].wait(), 5)
            [poll] = [t for t in asyncio.all_tasks() if t.get_name() == "tasky-poll"]
            ref = weakref.ref(poll.get_coro().cr_frame.f_globals["poll"])
            del poll
            await host.armmod("tasky")
            assert host.leaks() == []
            return ref

    ref = asyncio.run(main())
    gc.collect()
    assert ref() is None
