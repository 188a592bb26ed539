"""The host: loading, unloading, inspection, holds, pins, notifier, close (livemod.host)."""

from __future__ import annotations

import contextlib
import gc
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import livemod
from helpers import in_thread
from livemod import State

pytestmark = pytest.mark.usefixtures("no_stray_threads")

MODULES = Path(__file__).parent / "fixtures" / "modules"


def path(name: str) -> str:
    single = MODULES / f"{name}.py"
    return str(single if single.exists() else MODULES / name)


def line_of(name: str, marker: str) -> int:
    """The line number of ``marker`` in a fixture module's source."""
    for number, text in enumerate(Path(path(name)).read_text().splitlines(), 1):
        if marker in text:
            return number
    raise AssertionError(f"{marker!r} not in {name}")


def table(host: livemod.Host) -> list[tuple[Any, ...]]:
    """Everything lsmod says except the timestamps."""
    return [
        (r.name, r.version, r.state, r.holds, r.pins, r.used_by, r.uses, r.path,
         dict(r.params), r.errors)
        for r in host.lsmod()
    ]


def private_names() -> set[str]:
    return {n for n in sys.modules if n.startswith("livemod.mods.")}


class Transitions:
    """A subscriber that records every (name, old, new)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, State | None, State]] = []

    def __call__(self, name: str, old: State | None, new: State) -> None:
        self.seen.append((name, old, new))

    def of(self, name: str) -> list[tuple[State | None, State]]:
        return [(o, n) for m, o, n in self.seen if m == name]


@pytest.fixture
def transitions(host: livemod.Host) -> Iterator[Transitions]:
    t = Transitions()
    unsubscribe = host.subscribe(t)
    yield t
    unsubscribe()




# ------------------------------------------------------------------------------ insmod


def test_insmod_returns_a_live_module(host: livemod.Host, probe: Any) -> None:
    m = host.insmod(path("basic"), tag="x")
    assert isinstance(m, livemod.Module)
    assert (m.name, m.version, m.state) == ("basic", "1.0.0", State.LIVE)
    assert m.path == path("basic")
    assert m.params.tag == "x"
    assert m.ping(3) == ("pong", 3)
    assert host.hook("basic.ping")(7) == [("pong", 7)]
    assert host.hook("shared")() == ["x"]
    [row] = host.lsmod()
    assert (row.name, row.version, row.state, row.holds, row.pins) == (
        "basic", "1.0.0", State.LIVE, 0, 0
    )
    assert row.used_by == () and row.uses == ()
    assert row.params == {"priority": 0, "tag": "x"}
    assert row.errors == 0
    assert probe.seen("basic", "init") == [("basic", "init")]
    assert "loaded 1.0.0" in host.events()[-1].message


def test_insmod_converts_params_given_as_text(host: livemod.Host) -> None:
    host.insmod(path("allparams"), count="0x10", ratio="2.5", enabled="yes", names="x, y")
    assert host.hook("allparams.get")() == [
        {"text": "hi", "count": 16, "ratio": 2.5, "enabled": True, "names": ("x", "y")}
    ]


def test_insmod_package_directory(host: livemod.Host) -> None:
    m = host.insmod(MODULES / "webpkg")
    assert m.version == "2.0.0"
    assert host.hook("webpkg.handle")("a") == ["WEB:<A>"]


@pytest.mark.race
def test_concurrent_insmod_of_one_name_one_wins(host: livemod.Host) -> None:
    barrier = threading.Barrier(4)
    results: list[object] = []

    def load() -> None:
        barrier.wait(5)
        try:
            results.append(host.insmod(path("basic")))
        except livemod.LivemodError as exc:
            results.append(exc)

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sum(isinstance(r, livemod.Module) for r in results) == 1
    assert sum(isinstance(r, livemod.ModuleExists) for r in results) == 3
    assert [r.name for r in host.lsmod()] == ["basic"]


# ---------------------------------------------------------------------------- modprobe


def test_modprobe_by_name_and_alias(host: livemod.Host) -> None:
    m = host.modprobe("basic-alias")
    assert m.name == "basic"
    again = host.modprobe("basic")
    assert again.name == "basic" and again.state is State.LIVE
    assert len(host.lsmod()) == 1


def test_modprobe_loads_dependencies_first(host: livemod.Host, transitions: Transitions) -> None:
    m = host.modprobe("web")
    assert m.name == "web"
    names = [r.name for r in host.lsmod()]
    assert names == ["log", "web"]
    lives = [n for n, _, new in transitions.seen if new is State.LIVE]
    assert lives == ["log", "web"]
    [log_row] = [r for r in host.lsmod() if r.name == "log"]
    assert log_row.used_by == ("web",)
    assert host.hook("web.get")("/") == ["GET /"]


def test_modprobe_with_params_of_a_loaded_module_is_refused(host: livemod.Host) -> None:
    host.modprobe("basic")
    with pytest.raises(livemod.ModuleExists, match="already loaded"):
        host.modprobe("basic", tag="other")
    assert host.hook("shared")() == ["basic"]


def test_modprobe_unknown_name(host: livemod.Host) -> None:
    with pytest.raises(livemod.ModuleNotFound, match="nosuchmod"):
        host.modprobe("nosuchmod")
    assert host.lsmod() == []


def test_modprobe_rolls_back_the_chain_when_the_last_fails(host: livemod.Host) -> None:
    before = private_names()
    with pytest.raises(livemod.ParamError):
        host.modprobe("web", nosuch=1)
    assert host.lsmod() == []
    assert private_names() == before


# ----------------------------------------------------------------------------- modinfo


def test_modinfo_by_path_name_and_loaded_never_executes(
    host: livemod.Host, probe: Any
) -> None:
    info = host.modinfo(path("badbody"))
    assert info.name == "badbody"
    assert probe.events == []  # its body (which records, then raises) never ran
    by_name = host.modinfo("log")
    assert (by_name.name, by_name.version, by_name.path) == ("log", "1.2.0", path("log"))
    assert "prefix" in by_name.params
    assert host.modinfo("web").depends[0].name == "log"
    host.modprobe("basic")
    assert host.modinfo("basic-alias").name == "basic"
    assert host.modinfo("basic").description == (
        "A well-behaved module: one hook, one export, an exit that records."
    )
    with pytest.raises(livemod.ModuleNotFound, match="nosuchmod"):
        host.modinfo("nosuchmod")


# ------------------------------------------------------------------------------- rmmod


def test_rmmod_runs_exit_then_on_exit_and_removes_everything(
    host: livemod.Host, probe: Any, transitions: Transitions
) -> None:
    m = host.insmod(path("basic"))
    host.rmmod("basic")
    assert probe.seen("basic", "exit") == [("basic", "exit", "GOING")]
    exit_at = probe.events.index(("basic", "exit", "GOING"))
    assert probe.events.index(("basic", "on_exit")) > exit_at
    assert m.state is State.GONE
    assert dict(m.exports) == {}
    with pytest.raises(AttributeError):
        m.ping  # noqa: B018
    assert host.lsmod() == []
    assert host.hook("basic.ping")() == []
    assert host.hook("shared")() == []
    assert transitions.of("basic")[-2:] == [(State.LIVE, State.GOING), (State.GOING, State.GONE)]
    assert host.tainted == ()
    # A module of the same name can be loaded again; the old handle stays GONE.
    again = host.insmod(path("basic"))
    assert host.hook("basic.ping")(1) == [("pong", 1)]
    assert again.state is State.LIVE and again.ping(2) == ("pong", 2)
    assert m.state is State.GONE and dict(m.exports) == {}


def test_lsmod_rows_are_frozen_snapshots(host: livemod.Host) -> None:
    host.insmod(path("basic"))
    [row] = host.lsmod()
    with pytest.raises(AttributeError):
        row.state = State.GONE  # type: ignore[misc]
    host.rmmod("basic")
    assert row.state is State.LIVE  # a snapshot, not a live view


def test_rmmod_by_alias(host: livemod.Host) -> None:
    host.insmod(path("basic"))
    host.rmmod("basic-alias")
    assert host.lsmod() == []


def test_rmmod_unknown_module(host: livemod.Host) -> None:
    host.insmod(path("basic"))
    with pytest.raises(livemod.ModuleNotFound, match="nosuchmod"):
        host.rmmod("nosuchmod")
    assert [r.name for r in host.lsmod()] == ["basic"]


def test_exit_and_cleanup_failures_are_logged_and_the_rest_still_runs(
    host: livemod.Host, probe: Any
) -> None:
    host.insmod(path("raise_exit"))
    host.rmmod("raise_exit")
    assert probe.seen("raise_exit") == [
        ("raise_exit", "exit"),
        ("raise_exit", "on_exit", 3),
        ("raise_exit", "on_exit", 2),
        ("raise_exit", "on_exit", 1),
    ]
    assert host.lsmod() == []
    assert host.hook("raise_exit.h")() == []
    assert [t.flag for t in host.tainted] == ["exit-failed"]
    assert "exit failed on purpose" in host.tainted[0].reason
    messages = [e.message for e in host.events() if e.module == "raise_exit"]
    assert any("cleanup failed" in m and "cleanup 2 failed on purpose" in m for m in messages)


# ------------------------------------------------------------------ transactional init

FAIL_STEPS = [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize("step", FAIL_STEPS)
def test_failed_init_is_rolled_back_completely(
    host: livemod.Host, probe: Any, transitions: Transitions, step: int
) -> None:
    host.insmod(path("basic"))
    before_table = table(host)
    before_names = private_names()
    failinit_hook = host.hook("failinit.h")
    shared = host.hook("shared")
    seen_by_caller: list[object] = []
    stop = threading.Event()
    calls = 0

    def caller() -> None:
        # Calls the hooks the failing module registers on, as fast as it can, for the whole
        # load: a staged registration must never be visible.
        nonlocal calls
        while not stop.is_set():
            got = failinit_hook()
            got_shared = shared()
            calls += 1
            if got or got_shared != ["basic"]:
                seen_by_caller.append((got, got_shared))

    t = threading.Thread(target=caller, name="hook-caller")
    t.start()
    try:
        wait_calls = time.monotonic() + 5
        while calls == 0 and time.monotonic() < wait_calls:
            time.sleep(0.001)
        with pytest.raises(livemod.InitError) as excinfo:
            host.insmod(path("failinit"), step=step, delay=0.02)
    finally:
        stop.set()
        t.join(5)
    assert calls > 0
    assert seen_by_caller == []
    err = excinfo.value
    assert isinstance(err.__cause__, RuntimeError)
    assert str(err.__cause__) == f"failinit: planned failure after step {step}"
    assert err.module == "failinit"
    assert f"failinit.py:{line_of('failinit', 'FAIL-LINE')}" in str(err)
    assert "'failinit'" in str(err)
    # The host is exactly as before.
    assert table(host) == before_table
    assert private_names() == before_names
    assert host.hook("failinit.h")() == []
    assert host.hook("shared")() == ["basic"]
    assert host.hook("basic.ping")(1) == [("pong", 1)]
    # Nothing of the module ever ran except its init: no call, no thread, no exit.
    assert probe.seen("failinit", "called") == []
    assert probe.seen("failinit", "thread-ran") == []
    assert probe.seen("failinit", "exit") == []
    on_exit = [e[2] for e in probe.seen("failinit", "on_exit")]
    assert on_exit == ([2, 1] if step >= 6 else [1])
    assert transitions.of("failinit") == [
        (None, State.LOADING), (State.LOADING, State.COMING), (State.COMING, State.GONE)
    ]
    assert not any(th.name == "failinit-worker" for th in threading.enumerate())
    # And it loads fine once fixed.
    host.insmod(path("failinit"), step=0)
    assert host.hook("failinit.h")() == ["failinit"]


def test_a_successful_failinit_publishes_everything(host: livemod.Host, probe: Any) -> None:
    m = host.insmod(path("failinit"))
    assert host.hook("failinit.h")() == ["failinit"]
    assert host.hook("shared")() == ["failinit"]
    assert m.handler() == "failinit"
    host.rmmod("failinit")
    assert probe.seen("failinit", "exit") == [("failinit", "exit")]
    assert [e[2] for e in probe.seen("failinit", "on_exit")] == [2, 1]


@pytest.mark.parametrize(
    ("name", "source", "cause"),
    [("badbody", "badbody.py", ZeroDivisionError), ("badpkg", "badpkg/__init__.py", LookupError)],
)
def test_failing_module_body(
    host: livemod.Host,
    probe: Any,
    transitions: Transitions,
    name: str,
    source: str,
    cause: type[BaseException],
) -> None:
    host.insmod(path("basic"))
    before_table, before_names = table(host), private_names()
    with pytest.raises(livemod.InitError) as excinfo:
        host.insmod(path(name))
    assert isinstance(excinfo.value.__cause__, cause)
    lines = (MODULES / source).read_text().splitlines()
    number = next(n for n, text in enumerate(lines, 1) if "BODY-FAIL" in text)
    assert f"{Path(source).name}:{number}" in str(excinfo.value)
    assert repr(name) in str(excinfo.value)
    assert table(host) == before_table
    assert private_names() == before_names
    assert probe.seen(name, "init") == [] and probe.seen(name, "exit") == []
    assert transitions.of(name) == [(None, State.LOADING), (State.LOADING, State.GONE)]


# --------------------------------------------------------------------- subscribe/notify


def test_every_transition_is_announced_in_order(
    host: livemod.Host, transitions: Transitions
) -> None:
    host.insmod(path("basic"))
    host.rmmod("basic")
    assert transitions.seen == [
        ("basic", None, State.LOADING),
        ("basic", State.LOADING, State.COMING),
        ("basic", State.COMING, State.LIVE),
        ("basic", State.LIVE, State.GOING),
        ("basic", State.GOING, State.GONE),
    ]


def test_state_seen_by_the_module_matches_the_announcement(host: livemod.Host) -> None:
    states: list[tuple[State, State]] = []

    def check(name: str, old: State | None, new: State) -> None:
        states.append((new, host.lsmod()[0].state if host.lsmod() else State.GONE))

    host.subscribe(check)
    host.insmod(path("basic"))
    host.rmmod("basic")
    assert states == [(s, s) for s, _ in states]


def test_subscriber_veto_of_coming_fails_the_load_cleanly(
    host: livemod.Host, probe: Any, transitions: Transitions
) -> None:
    host.insmod(path("log"))
    before_table, before_names = table(host), private_names()
    veto = PermissionError("not today")

    def vetoer(name: str, old: State | None, new: State) -> None:
        if name == "basic" and new is State.COMING:
            raise veto

    unsubscribe = host.subscribe(vetoer)
    with pytest.raises(livemod.InitError, match="basic") as excinfo:
        host.insmod(path("basic"))
    assert excinfo.value.__cause__ is veto
    assert table(host) == before_table
    assert private_names() == before_names
    assert probe.seen("basic") == []  # neither init nor exit ran
    assert host.hook("basic.ping")() == []
    assert transitions.of("basic") == [
        (None, State.LOADING), (State.LOADING, State.COMING), (State.COMING, State.GONE)
    ]
    unsubscribe()
    host.insmod(path("basic"))
    assert host.hook("basic.ping")(1) == [("pong", 1)]


def test_a_subscriber_failing_elsewhere_is_logged_not_fatal(
    host: livemod.Host, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(name: str, old: State | None, new: State) -> None:
        if new in (State.LIVE, State.GONE):
            raise RuntimeError("subscriber broke")

    host.subscribe(broken)
    host.insmod(path("basic"))
    assert host.hook("basic.ping")(1) == [("pong", 1)]
    host.rmmod("basic")
    assert host.lsmod() == []
    assert "subscriber broke" in caplog.text


def test_unsubscribe_stops_notifications(host: livemod.Host) -> None:
    t = Transitions()
    unsubscribe = host.subscribe(t)
    host.insmod(path("basic"))
    unsubscribe()
    unsubscribe()  # idempotent
    host.rmmod("basic")
    assert [new for _, _, new in t.seen] == [State.LOADING, State.COMING, State.LIVE]


# ------------------------------------------------------------------------------- holds


def test_hold_refuses_rmmod_and_names_where_it_was_taken(host: livemod.Host) -> None:
    host.insmod(path("basic"))
    hold_line = sys._getframe().f_lineno + 1
    hold = host.hold("basic")
    assert host.lsmod()[0].holds == 1
    with pytest.raises(livemod.ModuleBusy) as excinfo:
        host.rmmod("basic")
    err = excinfo.value
    assert err.module == "basic"
    assert len(err.holders) == 1
    assert f"test_host.py:{hold_line}" in err.holders[0]
    assert "MainThread" in err.holders[0]
    assert f"test_host.py:{hold_line}" in str(err)
    assert host.lsmod()[0].state is State.LIVE
    assert host.hook("basic.ping")(1) == [("pong", 1)]
    hold.release()
    hold.release()  # idempotent
    assert host.lsmod()[0].holds == 0
    host.rmmod("basic")
    assert host.lsmod() == []


def test_hold_as_context_manager(host: livemod.Host) -> None:
    host.insmod(path("basic"))
    with host.hold("basic-alias") as m:
        assert m.name == "basic"
        assert m.ping(2) == ("pong", 2)
        assert host.lsmod()[0].holds == 1
    assert host.lsmod()[0].holds == 0


def test_hold_on_a_module_not_loaded(host: livemod.Host) -> None:
    with pytest.raises(livemod.ModuleNotFound):
        host.hold("basic")


def test_rmmod_wait_is_woken_by_a_release_from_another_thread(
    host: livemod.Host, wait_for: Callable[..., Any]
) -> None:
    host.insmod(path("basic"))
    hold = host.hold("basic")
    t, out = in_thread(lambda: host.rmmod("basic", wait=True, timeout=30))
    wait_for(lambda: host.lsmod()[0].state is State.GOING, what="GOING")
    # GOING: no new holds, no new calls.
    with pytest.raises(livemod.ModuleGoing):
        host.hold("basic")
    assert host.hook("basic.ping")(1) == []
    assert t.is_alive()
    started = time.monotonic()
    releaser = threading.Thread(target=hold.release, name="releaser")
    releaser.start()
    releaser.join(5)
    t.join(10)
    assert not t.is_alive()
    assert "error" not in out
    assert time.monotonic() - started < 5  # woken, not timed out
    assert host.lsmod() == []


def test_rmmod_wait_timeout_rolls_back_to_live(
    host: livemod.Host, probe: Any, transitions: Transitions
) -> None:
    host.insmod(path("basic"))
    hold = host.hold("basic")
    with pytest.raises(livemod.ModuleBusy) as excinfo:
        host.rmmod("basic", wait=True, timeout=0.2)
    assert "rolled back" in str(excinfo.value)
    assert any("test_host.py" in h for h in excinfo.value.holders)
    [row] = host.lsmod()
    assert row.state is State.LIVE and row.holds == 1
    assert host.hook("basic.ping")(5) == [("pong", 5)]
    assert host.hook("shared")() == ["basic"]
    assert probe.seen("basic", "exit") == []
    assert transitions.of("basic")[-2:] == [(State.LIVE, State.GOING), (State.GOING, State.LIVE)]
    assert host.tainted == ()
    hold.release()
    host.rmmod("basic")
    assert probe.seen("basic", "exit") == [("basic", "exit", "GOING")]


def test_force_unloads_a_held_module_and_taints(host: livemod.Host, probe: Any) -> None:
    host.insmod(path("basic"))
    hold = host.hold("basic")
    host.rmmod("basic", force=True)
    assert host.lsmod() == []
    assert probe.seen("basic", "exit") == [("basic", "exit", "GOING")]
    assert [(t.flag, t.module) for t in host.tainted] == [("forced-unload", "basic")]
    hold.release()  # harmless after the fact
    host.insmod(path("basic"))
    host.rmmod("basic")
    assert len(host.tainted) == 1  # permanent, not cleared by a clean unload


# -------------------------------------------------------------------------------- pins


class Packet:
    """Something a test hands to a module to pin."""


def test_pin_refuses_rmmod_and_is_named(host: livemod.Host) -> None:
    host.insmod(path("pinner"))
    packet = Packet()
    host.hook("pinner.pin")(packet)
    assert host.lsmod()[0].pins == 1
    with pytest.raises(livemod.ModuleBusy) as excinfo:
        host.rmmod("pinner")
    [holder] = excinfo.value.holders
    assert "Packet" in holder and "pinner.py" in holder
    assert host.lsmod()[0].state is State.LIVE
    del packet
    gc.collect()
    assert host.lsmod()[0].pins == 0
    host.rmmod("pinner")


def test_rmmod_wait_is_woken_by_a_pin_dying(
    host: livemod.Host, wait_for: Callable[..., Any]
) -> None:
    host.insmod(path("pinner"))
    box = [Packet()]
    host.hook("pinner.pin")(box[0], "the packet in the box")
    t, out = in_thread(lambda: host.rmmod("pinner", wait=True, timeout=30))
    wait_for(lambda: host.lsmod()[0].state is State.GOING, what="GOING")
    started = time.monotonic()
    killer = threading.Thread(target=box.clear, name="pin-killer")
    killer.start()
    killer.join(5)
    t.join(10)
    assert not t.is_alive() and "error" not in out
    assert time.monotonic() - started < 5
    assert host.lsmod() == []


def test_a_pin_released_early_no_longer_counts(host: livemod.Host) -> None:
    host.insmod(path("pinner"))
    packet = Packet()
    [release] = host.hook("pinner.pin")(packet, "my packet")
    with pytest.raises(livemod.ModuleBusy, match="my packet"):
        host.rmmod("pinner")
    release()
    assert host.lsmod()[0].pins == 0
    host.rmmod("pinner")
    assert host.lsmod() == []


def test_two_pins_are_counted_and_released_separately(host: livemod.Host) -> None:
    host.insmod(path("pinner"))
    first, second = Packet(), Packet()
    [release_first] = host.hook("pinner.pin")(first, "first packet")
    [_release_second] = host.hook("pinner.pin")(second, "second packet")
    try:
        assert host.lsmod()[0].pins == 2
        release_first()
        # The second packet is alive and still pinned: the module must not be removable.
        with pytest.raises(livemod.ModuleBusy, match="second packet"):
            host.rmmod("pinner")
    finally:
        first = second = None
        gc.collect()
    host.rmmod("pinner")


def test_pin_of_an_object_without_weak_references(host: livemod.Host) -> None:
    host.insmod(path("pinner"))
    with pytest.raises(TypeError, match="weak references"):
        host.hook("pinner.pin")(42)
    assert host.lsmod()[0].pins == 0


# ------------------------------------------------------------------- used by / cascade


def load_chain(host: livemod.Host) -> None:
    """log <- greet (import edge) <- app (require); log <- web (depends)."""
    host.modprobe("log")
    host.insmod(path("greet"))
    host.modprobe("app")
    host.modprobe("web")


def test_used_by_refusal_names_the_user(host: livemod.Host) -> None:
    load_chain(host)
    before = table(host)
    with pytest.raises(livemod.ModuleBusy) as excinfo:
        host.rmmod("greet")
    assert str(excinfo.value).startswith(
        "cannot remove 'greet': used by 'app' (rmmod app first, or use cascade=True)"
    )
    assert excinfo.value.holders == ("module 'app'",)
    with pytest.raises(livemod.ModuleBusy, match=r"used by 'greet', 'web'"):
        host.rmmod("log")
    assert table(host) == before
    assert host.hook("app.run")("ann") == ["hello ann"]


def test_cascade_removes_dependents_first(
    host: livemod.Host, transitions: Transitions
) -> None:
    load_chain(host)
    host.insmod(path("basic"))
    host.rmmod("log", cascade=True)
    assert [r.name for r in host.lsmod()] == ["basic"]
    gone = [n for n, _, new in transitions.seen if new is State.GONE]
    assert sorted(gone) == ["app", "greet", "log", "web"]
    assert gone.index("app") < gone.index("greet") < gone.index("log")
    assert gone.index("web") < gone.index("log")
    assert gone[-1] == "log"


def test_cascade_refuses_when_a_dependent_is_held(host: livemod.Host) -> None:
    load_chain(host)
    before = table(host)
    with host.hold("app"), pytest.raises(livemod.ModuleBusy, match="app"):
        host.rmmod("log", cascade=True)
    assert table(host) == before
    assert host.hook("app.run")("bo") == ["hello bo"]


# ------------------------------------------------------------------------------- close


def test_close_unloads_everything_dependents_first(probe: Any) -> None:
    host = livemod.Host(modpath=[MODULES])
    t = Transitions()
    host.subscribe(t)
    load_chain(host)
    host.insmod(path("basic"))
    host.close()
    assert host.closed
    assert host.lsmod() == []
    gone = [n for n, _, new in t.seen if new is State.GONE]
    assert sorted(gone) == ["app", "basic", "greet", "log", "web"]
    assert gone.index("app") < gone.index("greet") < gone.index("log")
    assert gone.index("web") < gone.index("log")
    assert probe.seen("basic", "exit") == [("basic", "exit", "GOING")]
    host.close()  # idempotent
    with pytest.raises(livemod.LivemodError, match="closed"):
        host.insmod(path("basic"))
    with pytest.raises(livemod.LivemodError, match="closed"):
        host.modprobe("basic")
    assert host.hook("basic.ping")() == []
    assert host.modinfo("basic").name == "basic"


def test_close_forces_a_held_module_after_the_timeout(probe: Any) -> None:
    host = livemod.Host(modpath=[MODULES])
    host.insmod(path("basic"))
    hold = host.hold("basic")
    host.close(timeout=0.1)
    assert host.lsmod() == []
    assert probe.seen("basic", "exit") == [("basic", "exit", "GOING")]
    assert "forced-unload" in [t.flag for t in host.tainted]
    hold.release()
    assert host.leaks() == []


def test_close_forcing_a_held_module_reports_no_leak(probe: Any) -> None:
    host = livemod.Host(modpath=[MODULES])
    host.insmod(path("basic"))
    hold = host.hold("basic")
    host.close(timeout=0.1)
    hold.release()
    assert [t.flag for t in host.tainted] == ["forced-unload"]


def test_host_as_context_manager(probe: Any) -> None:
    with livemod.Host(modpath=[MODULES]) as host:
        host.modprobe("basic")
        host.insmod(path("worker"))
        assert len(host.lsmod()) == 2
    assert host.closed and host.lsmod() == []
    assert probe.seen("basic", "exit") and probe.seen("worker", "exit")
    assert not any(t.name == "worker-loop" for t in threading.enumerate())


def test_host_rejects_an_unknown_error_policy() -> None:
    with pytest.raises(ValueError, match="isolate"):
        livemod.Host(errors="ignore")  # type: ignore[arg-type]


# --------------------------------------------------------- bad input leaves host alone


def syntax_error_module(tmp_path: Path) -> Path:
    p = tmp_path / "broken.py"
    p.write_text('__livemod__ = {"name": "broken"}\n\ndef init(mod)\n    pass\n')
    return p


def non_literal_manifest(tmp_path: Path) -> Path:
    p = tmp_path / "nonliteral.py"
    p.write_text('NAME = "x"\n__livemod__ = {"name": NAME}\n')
    return p


def missing_import(tmp_path: Path) -> Path:
    p = tmp_path / "wantsnothing.py"
    p.write_text('__livemod__ = {"name": "wantsnothing"}\nfrom livemod.mods.nosuch import x\n')
    return p


BAD_INPUTS: list[tuple[str, Callable[[livemod.Host, Path], object], type[Exception], str]] = [
    ("missing file", lambda h, d: h.insmod(d / "nothing_here.py"), livemod.ModuleNotFound,
     "nothing_here.py"),
    ("missing folder module", lambda h, d: h.insmod(d / "nodir"), livemod.ModuleNotFound,
     "nodir"),
    ("syntax error", lambda h, d: h.insmod(syntax_error_module(d)), livemod.LivemodError,
     "broken.py"),
    ("manifest not a literal", lambda h, d: h.insmod(non_literal_manifest(d)),
     livemod.ManifestError, "nonliteral.py"),
    ("name already loaded", lambda h, d: h.insmod(path("basic")), livemod.ModuleExists,
     "'basic'"),
    ("alias taken", lambda h, d: h.insmod(path("alias_clash")), livemod.ModuleExists,
     "'basic' is already taken"),
    ("missing dependency (insmod)", lambda h, d: h.insmod(path("needs_missing")),
     livemod.DependencyError, "nosuchmod"),
    ("missing dependency (modprobe)", lambda h, d: h.modprobe("needs_missing"),
     livemod.DependencyError, "nosuchmod"),
    ("dependency not loaded", lambda h, d: h.insmod(path("web")), livemod.DependencyError,
     "'log"),
    ("wrong param type", lambda h, d: h.insmod(path("allparams"), count="many"),
     livemod.ParamError, "'count' expects int"),
    ("unknown param", lambda h, d: h.insmod(path("allparams"), cuont=1), livemod.ParamError,
     "did you mean 'count'"),
    ("import of a missing module", lambda h, d: h.insmod(missing_import(d)), livemod.InitError,
     "nosuch"),
]


@pytest.mark.parametrize(
    ("action", "error", "words"),
    [pytest.param(a, e, w, id=i) for i, a, e, w in BAD_INPUTS],
)
def test_bad_input_leaves_the_host_exactly_as_before(
    host: livemod.Host,
    tmp_path: Path,
    probe: Any,
    action: Callable[[livemod.Host, Path], object],
    error: type[Exception],
    words: str,
) -> None:
    host.insmod(path("basic"))
    with host.hold("basic"):
        pass
    before = (table(host), private_names(), host.hook("shared").implementations(),
              host.tainted)
    with pytest.raises(error) as excinfo:
        action(host, tmp_path)
    assert isinstance(excinfo.value, livemod.LivemodError)
    assert words in str(excinfo.value)
    after = (table(host), private_names(), host.hook("shared").implementations(),
             host.tainted)
    assert after == before
    assert host.hook("basic.ping")(9) == [("pong", 9)]
    assert probe.seen("basic", "exit") == []


def test_syntax_error_names_file_and_line(host: livemod.Host, tmp_path: Path) -> None:
    with pytest.raises(livemod.LivemodError) as excinfo:
        host.insmod(syntax_error_module(tmp_path))
    assert re.search(r"broken\.py.*\b3\b", str(excinfo.value))


# ------------------------------------------------------------------------ events, repr


def test_event_log_records_loads_refusals_and_unloads(host: livemod.Host) -> None:
    host.insmod(path("basic"))
    hold = host.hold("basic")
    with pytest.raises(livemod.ModuleBusy):
        host.rmmod("basic", wait=True, timeout=0.05)
    hold.release()
    host.rmmod("basic")
    with pytest.raises(livemod.InitError):
        host.insmod(path("badbody"))
    messages = [(e.module, e.message.split(" ")[0]) for e in host.events()]
    assert messages == [
        ("basic", "loaded"), ("basic", "unload"), ("basic", "unloaded"), ("badbody", "load"),
    ]
    assert "rolled back" in host.events()[1].message
    assert "badbody.py" in host.events()[3].message
    assert "basic" in repr(host.insmod(path("basic")))


def test_close_from_inside_a_module_does_not_strand_the_others(
    host: livemod.Host, probe: Any, tmp_path: Path
) -> None:
    closer = tmp_path / "closer.py"
    closer.write_text(
        '__livemod__ = {"name": "closer"}\n'
        "def shutdown(host):\n"
        "    host.close(timeout=1.0)\n"
        "def init(mod):\n"
        '    mod.hook("closer.shutdown").add(shutdown)\n'
    )
    host.insmod(path("basic"))
    host.insmod(closer)
    # Refusing to unload itself is fine; stranding the others is not.
    with contextlib.suppress(livemod.LivemodError):
        host.hook("closer.shutdown")(host)
    host.close()
    assert host.lsmod() == []
    assert probe.seen("basic", "exit") == [("basic", "exit", "GOING")]


LOOKALIKE = "\uff47reet"  # a fullwidth g: Python reads it as 'greet'


def test_a_look_alike_name_cannot_load_beside_the_module_and_finds_it(
    host: livemod.Host, tmp_path: Path
) -> None:
    host.insmod(path("log"))
    host.insmod(path("greet"))
    twin = tmp_path / "twin.py"
    twin.write_text(f'__livemod__ = {{"name": "{LOOKALIKE}"}}\n', encoding="utf-8")
    with pytest.raises(livemod.ManifestError, match="'greet'"):
        host.insmod(str(twin))
    assert sorted(r.name for r in host.lsmod()) == ["greet", "log"]
    # Looked up by the look-alike, a name means what Python's import would make of it.
    with host.hold(LOOKALIKE):
        assert {r.name: r.holds for r in host.lsmod()}["greet"] == 1
    host.rmmod(LOOKALIKE)
    assert "greet" not in [r.name for r in host.lsmod()]
