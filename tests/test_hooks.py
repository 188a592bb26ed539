"""Hook points, dispatch order, error policies, async hooks, read-side sections (_hooks)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import livemod
from livemod._hooks import Impl
from livemod._hooktable import HookTable

pytestmark = pytest.mark.usefixtures("no_stray_threads")

MODULES = Path(__file__).parent / "fixtures" / "modules"


def path(name: str) -> str:
    return str(MODULES / f"{name}.py")


# ---------------------------------------------------------------------- hook points


def test_hook_is_created_on_first_use_and_shared(host: livemod.Host) -> None:
    hook = host.hook("nobody.home")
    assert host.hook("nobody.home") is hook
    assert hook.name == "nobody.home"
    assert hook() == []
    assert hook(1, x=2) == []
    assert len(hook) == 0
    assert hook.implementations() == ()
    assert "nobody.home" in repr(hook)


def test_a_hook_taken_before_the_module_loads_sees_it(host: livemod.Host) -> None:
    hook = host.hook("basic.ping")
    assert hook(1) == []
    host.insmod(path("basic"))
    assert hook(1) == [("pong", 1)]
    assert len(hook) == 1
    assert hook.implementations() == ("basic:ping",)
    host.rmmod("basic")
    assert hook(1) == []


def test_positional_and_keyword_arguments_reach_the_implementation(
    host: livemod.Host,
) -> None:
    host.insmod(path("basic"))
    hook = host.hook("basic.ping")
    assert hook() == [("pong", None)]
    assert hook("a") == [("pong", "a")]
    assert hook(x="b") == [("pong", "b")]
    with pytest.raises(TypeError):
        hook(1, 2, 3)


# ---------------------------------------------------------------------------- order


def test_higher_priority_runs_first(host: livemod.Host) -> None:
    host.insmod(path("basic"), priority=5)
    host.insmod(path("ordered"))
    shared = host.hook("shared")
    assert shared() == ["ordered.high", "basic", "ordered.mid", "ordered.low"]
    assert shared.implementations() == (
        "ordered:high", "basic:shared", "ordered:mid", "ordered:low"
    )


def test_equal_priority_runs_in_load_order(host: livemod.Host) -> None:
    host.insmod(path("basic"))
    host.insmod(path("ordered"))
    assert host.hook("shared")() == ["ordered.high", "basic", "ordered.mid", "ordered.low"]
    host.rmmod("basic")
    host.insmod(path("basic"), tag="again")
    assert host.hook("shared")() == ["ordered.high", "ordered.mid", "again", "ordered.low"]


def test_priority_param_given_as_text(host: livemod.Host) -> None:
    host.insmod(path("ordered"))
    host.insmod(path("basic"), priority="-10")
    assert host.hook("shared")()[-1] == "basic"


# ---------------------------------------------------------------------- error policy


def test_raise_policy_propagates_and_stops_the_call(host: livemod.Host) -> None:
    host.insmod(path("faulty"))
    with pytest.raises(ValueError, match="faulty on purpose: 1"):
        host.hook("faulty.h")(1)
    assert host.lsmod()[0].errors == 0


def test_isolate_policy_logs_skips_and_counts(
    probe: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with livemod.Host(modpath=[MODULES], errors="isolate") as host:
        host.insmod(path("faulty"))
        host.insmod(path("basic"))
        hook = host.hook("faulty.h")
        assert hook(1) == [("ok", 1)]
        assert hook(2) == [("ok", 2)]
        rows = {r.name: r for r in host.lsmod()}
        assert rows["faulty"].errors == 2
        assert rows["basic"].errors == 0
        assert "faulty on purpose: 1" in caplog.text
        assert "faulty:bad" in caplog.text
        # Other hooks are unaffected.
        assert host.hook("basic.ping")(3) == [("pong", 3)]


def test_per_hook_policy_overrides_the_host(host: livemod.Host) -> None:
    hook = host.hook("faulty.h", errors="isolate")
    host.insmod(path("faulty"))
    assert hook(1) == [("ok", 1)]
    assert host.lsmod()[0].errors == 1


def test_isolate_does_not_swallow_base_exceptions(probe: Any) -> None:
    with livemod.Host(modpath=[MODULES], errors="isolate") as host:
        host.insmod(path("ctxmod"))
        [ctx] = host.hook("ctxmod.ctx")()

        def interrupt() -> None:
            raise KeyboardInterrupt

        ctx.hook("interrupting").add(interrupt)
        with pytest.raises(KeyboardInterrupt):
            host.hook("interrupting")()


# ----------------------------------------------------------------------------- async


def test_sync_call_of_a_hook_with_an_async_impl_is_a_type_error(host: livemod.Host) -> None:
    host.insmod(path("asyncmod"))
    with pytest.raises(TypeError, match=r"acall.*|.*asyncmod") as excinfo:
        host.hook("async.h")(1)
    assert "acall" in str(excinfo.value) and "asyncmod" in str(excinfo.value)


def test_acall_awaits_async_and_sync_impls_in_order(host: livemod.Host) -> None:
    host.insmod(path("asyncmod"))
    host.insmod(path("ctxmod"))
    [ctx] = host.hook("ctxmod.ctx")()
    ctx.hook("async.h").add(lambda x: ("sync", x), priority=1)
    hook = host.hook("async.h")
    assert asyncio.run(hook.acall(7)) == [("sync", 7), ("async", 7)]
    assert asyncio.run(hook.acall(8, concurrent=True)) == [("sync", 8), ("async", 8)]


def test_acall_on_a_sync_hook(host: livemod.Host) -> None:
    host.insmod(path("basic"))
    assert asyncio.run(host.hook("basic.ping").acall(x=4)) == [("pong", 4)]
    assert asyncio.run(host.hook("nothing.here").acall()) == []


@pytest.mark.parametrize("concurrent", [False, True])
def test_acall_isolate(probe: Any, concurrent: bool) -> None:
    with livemod.Host(modpath=[MODULES], errors="isolate") as host:
        host.insmod(path("faulty"))
        result = asyncio.run(host.hook("faulty.h").acall(5, concurrent=concurrent))
        assert result == [("ok", 5)]
        assert host.lsmod()[0].errors == 1


def test_acall_raise_policy_propagates(host: livemod.Host) -> None:
    host.insmod(path("faulty"))
    with pytest.raises(ValueError, match="faulty on purpose"):
        asyncio.run(host.hook("faulty.h").acall(1))


# ------------------------------------------------- in-flight tracking (read sections)


def test_a_hook_may_be_called_from_inside_an_implementation(host: livemod.Host) -> None:
    host.insmod(path("basic"))
    host.insmod(path("ctxmod"))
    [ctx] = host.hook("ctxmod.ctx")()
    ctx.hook("outer").add(lambda: host.hook("basic.ping")("inner"))
    assert host.hook("outer")() == [[("pong", "inner")]]


def _table() -> tuple[HookTable, list[tuple[str, Impl, BaseException]]]:
    errors: list[tuple[str, Impl, BaseException]] = []
    table = HookTable(threading.Lock(), "raise", lambda h, i, e: errors.append((h, i, e)))
    return table, errors


def _impl(fn: Callable[..., Any], owner: int, table: HookTable, priority: int = 0) -> Impl:
    return Impl(fn, owner=owner, owner_name=f"m{owner}", priority=priority,
                seq=table.next_seq())


def test_a_caller_holding_an_old_dispatcher_never_enters_an_unpublished_impl() -> None:
    # The window the seqlock re-check closes: a caller fetched the dispatcher (the snapshot)
    # and only then runs it, after the module was unpublished.
    table, _ = _table()
    calls: list[str] = []
    hook = table.get("h")
    table.publish_unlocked([("h", _impl(lambda: calls.append("old") or "old", 1, table))])
    stale = type(hook).__call__
    assert stale(hook) == ["old"]
    table.unpublish_unlocked(1)
    calls.clear()
    assert stale(hook) == []
    table.publish_unlocked([("h", _impl(lambda: "new", 2, table))])
    assert stale(hook) == ["new"]
    assert calls == []


def test_busy_hooks_reports_a_call_in_flight_until_it_ends() -> None:
    table, _ = _table()
    entered, release = threading.Event(), threading.Event()

    def slow() -> str:
        entered.set()
        release.wait(10)
        return "slow"

    table.publish_unlocked([("h", _impl(slow, 1, table)), ("other", _impl(lambda: 0, 1, table))])
    table.publish_unlocked([("h", _impl(lambda: "fast", 2, table))])
    hook = table.get("h")
    out: list[Any] = []
    t = threading.Thread(target=lambda: out.append(hook()))
    t.start()
    try:
        assert entered.wait(5)
        assert table.busy_hooks(1) == []  # nothing retired yet: still published
        table.unpublish_unlocked(1)
        assert table.busy_hooks(1) == ["h"]
        assert table.busy_hooks(2) == ["h"]  # conservative: the old snapshot includes 2 too
        assert hook() == ["fast"]  # new calls do not reach the unpublished module
    finally:
        release.set()
        t.join(5)
    assert out == [["slow", "fast"]]
    assert table.busy_hooks(1) == []
    assert table.retired == []


def test_publish_keeps_order_and_remove_takes_one_impl() -> None:
    table, _ = _table()
    a = _impl(lambda: "a", 1, table)
    b = _impl(lambda: "b", 2, table, priority=3)
    c = _impl(lambda: "c", 1, table)
    table.publish_unlocked([("h", a), ("h", c)])
    table.publish_unlocked([("h", b)])
    hook = table.get("h")
    assert hook() == ["b", "a", "c"]
    table.remove_unlocked("h", a)
    assert hook() == ["b", "c"]
    table.remove_unlocked("h", a)  # already gone: harmless
    table.remove_unlocked("nope", a)
    removed = table.unpublish_unlocked(1)
    assert removed == [("h", c)]
    assert hook() == ["b"]
    table.publish_unlocked(removed)
    assert hook() == ["b", "c"]


def test_describe_names_module_and_function() -> None:
    def handler() -> None: ...

    table, _ = _table()
    impl = _impl(handler, 7, table)
    assert impl.describe() == "m7:" + handler.__qualname__
    assert impl.is_async is False


@pytest.mark.race
def test_concurrent_callers_see_all_or_nothing_of_a_module(
    host: livemod.Host, wait_for: Callable[..., Any]
) -> None:
    # 'ordered' registers three impls on one hook: a call sees all three or none.
    stop = threading.Event()
    bad: list[list[str]] = []
    calls = [0]

    def call() -> None:
        hook = host.hook("shared")
        while not stop.is_set():
            got = hook()
            calls[0] += 1
            if got not in ([], ["ordered.high", "ordered.mid", "ordered.low"]):
                bad.append(got)

    threads = [threading.Thread(target=call, name=f"caller-{i}") for i in range(3)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: calls[0] > 0)
        for _ in range(15):
            host.insmod(path("ordered"))
            host.rmmod("ordered")
    finally:
        stop.set()
        for t in threads:
            t.join(5)
    assert bad == []


def test_a_drained_async_snapshot_lets_go_of_its_implementations() -> None:
    # The sync dispatcher of a hook with coroutine implementations refuses and holds none of
    # them; acall does. Scrubbing must empty acall's cells too, or the leak check reports
    # a module a drained snapshot still holds.
    import gc
    import weakref

    table, _ = _table()

    async def impl() -> str:
        return "a"

    ref = weakref.ref(impl)
    table.publish_unlocked([("h", _impl(impl, 1, table))])
    hook = table.get("h")
    assert asyncio.run(hook.acall()) == ["a"]
    kept = hook.acall  # a caller holding the old dispatcher
    del impl
    table.unpublish_unlocked(1)
    gc.collect()
    assert ref() is None
    assert asyncio.run(kept()) == []


def test_the_last_reader_of_a_retired_snapshot_wakes_the_unload() -> None:
    import queue

    table, _ = _table()
    entered, release = threading.Event(), threading.Event()

    def slow() -> str:
        entered.set()
        release.wait(10)
        return "slow"

    table.publish_unlocked([("h", _impl(slow, 1, table))])
    hook = table.get("h")
    t = threading.Thread(target=hook)
    t.start()
    wakeups: queue.SimpleQueue[None] = queue.SimpleQueue()
    try:
        assert entered.wait(5)
        table.add_waiter(wakeups)
        table.unpublish_unlocked(1)  # retired with a reader inside
        assert wakeups.empty()
        release.set()
        wakeups.get(timeout=5)  # woken by the reader leaving, not by a poll
    finally:
        release.set()
        t.join(5)
        table.remove_waiter(wakeups)
    assert table.busy_hooks(1) == []


def test_a_snapshot_grown_by_a_publish_equals_one_built_from_scratch() -> None:
    # Publishing carries what a snapshot derives from its implementations over from the
    # last one (issue 12: 1,000 implementations on one hook); it must be what a full build
    # gives, whatever the priorities, shapes and kinds of the implementations added.
    from livemod._snapshot import _Snapshot

    def one(x: object) -> object:
        return x

    def two(a: object, b: object = None) -> object:
        return a

    async def coro(x: object) -> object:
        return x

    def wrap(x: object) -> Any:
        return (yield)

    table, _ = _table()
    kinds: list[tuple[Callable[..., Any], int, bool]] = [
        (one, 0, False), (one, 5, False), (one, -1, False), (coro, 0, False),
        (one, 5, False), (two, 0, False), (one, 0, False), (one, 9, False)]
    kinds = kinds * 3 + [(wrap, 3, True), (one, 2, False)]  # grown, then built whole
    for owner, (fn, priority, wrapper) in enumerate(kinds, start=1):
        impl = Impl(fn, owner=owner, owner_name=f"m{owner}", priority=priority,
                    seq=table.next_seq(), wrapper=wrapper)
        table.publish_unlocked([("h", impl)])
        snap = table.get("h")._snap
        fresh = _Snapshot(snap.impls)
        assert [i.sort_key() for i in snap.impls] == sorted(i.sort_key() for i in snap.impls)
        assert (snap.plain, snap.wraps, snap.fns, snap.n_async, snap.shape, snap.owners) == (
            fresh.plain, fresh.wraps, fresh.fns, fresh.n_async, fresh.shape, fresh.owners)
    assert len(table.get("h")) == len(kinds)
