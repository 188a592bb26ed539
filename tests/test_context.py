"""ModuleContext: registrations, exports, require, on_exit, managed threads, pins (_context)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import livemod
from livemod import State

pytestmark = pytest.mark.usefixtures("no_stray_threads")

MODULES = Path(__file__).parent / "fixtures" / "modules"


def path(name: str) -> str:
    return str(MODULES / f"{name}.py")


class Packet:
    """Something to pin."""


def load_ctx(host: livemod.Host, **params: object) -> livemod.ModuleContext:
    host.insmod(path("ctxmod"), **params)
    [ctx] = host.hook("ctxmod.ctx")()
    return ctx


def test_init_sees_the_module_coming_with_its_identity(host: livemod.Host, probe: Any) -> None:
    ctx = load_ctx(host, level="7")
    assert probe.seen("ctxmod", "init") == [("ctxmod", "init", "COMING", 7)]
    assert (ctx.name, ctx.version, ctx.path) == ("ctxmod", "4.2.0", path("ctxmod"))
    assert ctx.params.level == 7
    assert ctx.state is State.LIVE
    assert ctx.log.name == "livemod.mods.ctxmod"
    assert ctx.handover_state is None
    assert "ctxmod" in repr(ctx)


def test_managed_thread_starts_only_once_live(
    host: livemod.Host, probe: Any, wait_for: Callable[..., Any]
) -> None:
    load_ctx(host)
    wait_for(lambda: probe.seen("ctxmod", "thread-start"))
    assert probe.seen("ctxmod", "thread-start") == [("ctxmod", "thread-start", "LIVE")]
    events = [e[1] for e in probe.seen("ctxmod")]
    assert events.index("init-end") < events.index("thread-start")


def test_unload_sets_stopping_before_exit_and_joins_the_thread(
    host: livemod.Host, probe: Any
) -> None:
    ctx = load_ctx(host)
    assert not ctx.stopping.is_set()
    host.rmmod("ctxmod")
    assert ctx.stopping.is_set()
    assert probe.seen("ctxmod", "exit") == [("ctxmod", "exit", "GOING")]
    assert probe.seen("ctxmod", "thread-stop") == [("ctxmod", "thread-stop")]
    assert not any(t.name == "ctxmod-thread" for t in threading.enumerate())


def test_worker_thread_ticks_and_is_stopped_at_unload(
    host: livemod.Host, probe: Any, wait_for: Callable[..., Any]
) -> None:
    host.insmod(path("worker"))
    wait_for(lambda: probe.kept.get("worker.ticks", 0) >= 3, what="the worker to tick")
    assert next(t for t in threading.enumerate() if t.name == "worker-loop").daemon
    host.rmmod("worker")  # its own thread running its code does not make it busy
    assert not any(t.name == "worker-loop" for t in threading.enumerate())
    assert probe.seen("worker", "stopped") == [("worker", "stopped")]
    assert probe.seen("worker", "started") == [("worker", "started", "LIVE")]
    assert host.tainted == ()


@pytest.mark.asserts_leak
def test_a_thread_that_will_not_stop_is_reported_and_taints(
    host: livemod.Host, probe: Any, wait_for: Callable[..., Any]
) -> None:
    host.insmod(path("stubborn"))
    wait_for(lambda: probe.seen("stubborn", "started"))
    host.rmmod("stubborn")
    assert host.lsmod() == []
    taints = {t.flag: t for t in host.tainted}
    taint = taints["thread-not-stopped"]
    assert taint.module == "stubborn" and "stubborn-loop" in taint.reason
    # The thread still runs the module's code, so the code is still alive.
    assert "module-leaked" in taints
    assert [leak.name for leak in host.leaks()] == ["stubborn"]
    probe.gate("stubborn.release").set()
    wait_for(lambda: not any(t.name == "stubborn-loop" for t in threading.enumerate()))
    assert host.leaks() == []


def test_a_thread_started_while_live_starts_at_once(
    host: livemod.Host, wait_for: Callable[..., Any]
) -> None:
    ctx = load_ctx(host)
    ran = threading.Event()
    t = ctx.thread(lambda: (ran.set(), ctx.stopping.wait(10)), name="late-thread")
    assert ran.wait(5)
    assert t.name == "late-thread" and t.daemon
    host.rmmod("ctxmod")
    assert not t.is_alive()


# --------------------------------------------------------------- registrations while LIVE


def test_registering_while_live_publishes_at_once_and_is_undone(host: livemod.Host) -> None:
    ctx = load_ctx(host)
    reg = ctx.hook("late").add(lambda: "late", priority=2)
    assert isinstance(reg, livemod.Registration)
    assert reg.hook == "late"
    assert host.hook("late")() == ["late"]
    assert "ctxmod:" in repr(reg)
    host.rmmod("ctxmod")
    assert host.hook("late")() == []


def test_registration_removed_early(host: livemod.Host) -> None:
    ctx = load_ctx(host)
    reg = ctx.hook("late").add(lambda: 1)
    ctx.hook("late").add(lambda: 2)
    reg.remove()
    reg.remove()  # idempotent
    assert host.hook("late")() == [2]
    host.rmmod("ctxmod")
    assert host.hook("late")() == []


def test_adding_a_non_callable_is_a_type_error(host: livemod.Host) -> None:
    ctx = load_ctx(host)
    with pytest.raises(TypeError, match="not callable"):
        ctx.hook("late").add("not a function")  # type: ignore[arg-type]
    assert host.hook("late")() == []


def test_hook_handle_calls_the_hook(host: livemod.Host) -> None:
    host.insmod(path("basic"))
    ctx = load_ctx(host)
    assert ctx.hook("basic.ping")(3) == [("pong", 3)]


def test_export_while_live_and_its_errors(host: livemod.Host) -> None:
    ctx = load_ctx(host)
    ctx.export("answer", 42)
    handle = host.modprobe("ctxmod")
    assert handle.answer == 42
    assert dict(handle.exports) == {"answer": 42}
    with pytest.raises(ValueError, match="already exports"):
        ctx.export("answer", 43)
    with pytest.raises(ValueError, match="identifier"):
        ctx.export("not a name", 1)
    with pytest.raises(AttributeError, match="answer"):
        handle.question  # noqa: B018
    host.rmmod("ctxmod")
    assert dict(handle.exports) == {}


def test_require_gives_exports_and_records_used_by(host: livemod.Host) -> None:
    host.modprobe("log", prefix="> ")
    ctx = load_ctx(host)
    log = ctx.require("log")
    assert log.write("x") == "> x"
    assert "write" in dir(log)
    with pytest.raises(AttributeError, match=r"exports no 'nope'.*write"):
        log.nope  # noqa: B018
    rows = {r.name: r for r in host.lsmod()}
    assert rows["log"].used_by == ("ctxmod",)
    assert rows["ctxmod"].uses == ("log",)
    with pytest.raises(livemod.ModuleBusy, match="used by 'ctxmod'"):
        host.rmmod("log")
    host.rmmod("ctxmod")
    host.rmmod("log")


def test_require_of_a_module_not_loaded(host: livemod.Host) -> None:
    ctx = load_ctx(host)
    with pytest.raises(livemod.DependencyError, match="nosuchmod") as excinfo:
        ctx.require("nosuchmod")
    assert excinfo.value.chain == ("ctxmod", "nosuchmod")
    assert host.lsmod()[0].uses == ()


def test_on_exit_runs_in_reverse_order_after_exit(host: livemod.Host, probe: Any) -> None:
    ctx = load_ctx(host)
    order: list[object] = []
    for i in range(3):
        returned = ctx.on_exit(lambda i=i: order.append(i))
        assert callable(returned)
    host.rmmod("ctxmod")
    assert order == [2, 1, 0]
    assert probe.seen("ctxmod", "exit")


def test_a_failing_on_exit_does_not_stop_the_others(host: livemod.Host) -> None:
    ctx = load_ctx(host)
    order: list[str] = []
    ctx.on_exit(lambda: order.append("first"))
    ctx.on_exit(lambda: 1 / 0)
    ctx.on_exit(lambda: order.append("last"))
    host.rmmod("ctxmod")
    assert order == ["last", "first"]
    assert host.lsmod() == []
    assert any("cleanup failed" in e.message and "ZeroDivisionError" in e.message
               for e in host.events())


@pytest.mark.parametrize(
    "action",
    [
        lambda ctx: ctx.hook("late").add(lambda: 1),
        lambda ctx: ctx.export("late", 1),
        lambda ctx: ctx.on_exit(lambda: None),
        lambda ctx: ctx.thread(lambda: None),
        lambda ctx: ctx.pin(Packet()),
    ],
    ids=["hook", "export", "on_exit", "thread", "pin"],
)
def test_nothing_can_be_registered_after_unload(
    host: livemod.Host, action: Callable[[livemod.ModuleContext], object]
) -> None:
    ctx = load_ctx(host)
    host.rmmod("ctxmod")
    with pytest.raises(livemod.ModuleGoing, match="ctxmod"):
        action(ctx)
    assert host.hook("late")() == []
    assert not any(t.name.startswith("ctxmod") for t in threading.enumerate())


def test_pin_taken_through_the_context_names_its_place(host: livemod.Host) -> None:
    ctx = load_ctx(host)
    packet = Packet()
    ctx.pin(packet)
    [row] = host.lsmod()
    assert row.pins == 1
    with pytest.raises(livemod.ModuleBusy) as excinfo:
        host.rmmod("ctxmod")
    [holder] = excinfo.value.holders
    assert "Packet" in holder and "test_context.py" in holder
    del packet
    assert host.lsmod()[0].pins == 0
    host.rmmod("ctxmod")


def test_a_failed_init_forgets_the_edges_it_recorded(host: livemod.Host, tmp_path: Path) -> None:
    source = tmp_path / "needy.py"
    source.write_text(
        '__livemod__ = {"name": "needy"}\n'
        "def init(mod):\n"
        '    mod.require("log").write("hello")\n'
        '    raise RuntimeError("needy gives up")\n'
    )
    host.modprobe("log")
    with pytest.raises(livemod.InitError, match="needy gives up") as excinfo:
        host.insmod(source)
    assert "needy.py:4" in str(excinfo.value)
    [row] = host.lsmod()
    assert row.name == "log" and row.used_by == ()
    host.rmmod("log")
    assert host.lsmod() == []


def test_a_finished_managed_thread_does_not_mark_its_ident(host: livemod.Host) -> None:
    ctx = load_ctx(host)
    short = ctx.thread(lambda: None, name="short-lived")
    short.join(5)
    for _ in range(20):  # a new thread usually gets the ident that was just freed
        out: dict[str, Any] = {}

        def remove(out: dict[str, Any] = out) -> None:
            out["ident"] = threading.get_ident()
            if out["ident"] == short.ident:
                try:
                    host.rmmod("ctxmod")
                except livemod.LivemodError as exc:
                    out["error"] = exc

        t = threading.Thread(target=remove)
        t.start()
        t.join(10)
        if out["ident"] == short.ident:
            break
    else:
        pytest.skip("the OS did not reuse the thread ident")
    assert "error" not in out, out
    assert host.lsmod() == []
