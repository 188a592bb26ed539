"""Hot upgrade: ``host.replace`` / ``host.areplace`` (livemod._upgrade).

The fixture versions live in ``tests/fixtures/upgrade/``: ``svc_v1.py`` and ``svc_v2.py``
answer the hook ``svc.which`` with their version, hand their call count over, and block on
``svc.block`` until the test opens a gate; the other ``svc_*.py`` files are v2s broken in
one way each.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import livemod
from helpers import in_thread, race_scale
from livemod import State

pytestmark = pytest.mark.usefixtures("no_stray_threads")

UPGRADE = Path(__file__).parent / "fixtures" / "upgrade"
V1 = str(UPGRADE / "svc_v1.py")
V2 = str(UPGRADE / "svc_v2.py")


def fixture(name: str) -> str:
    return str(UPGRADE / f"{name}.py")


#: A v2 that does not parse (written at test time: a fixture file would trip the linters).
PARSE_ERROR = '''"""A v2 of svc that does not parse."""

__livemod__ = {"name": "svc", "version": "2.0.0"}

def which(:
    return "2.0.0"
'''


def rows(host: livemod.Host) -> set[tuple[str, str, State]]:
    return {(r.name, r.version, r.state) for r in host.lsmod()}


def private_names() -> set[str]:
    return {n for n in sys.modules if n.startswith("livemod.mods.")}


def assert_clean(host: livemod.Host) -> None:
    """Every old version passed its leak check and nothing tainted the host."""
    assert host.leaks() == []
    assert host.tainted == ()




@pytest.fixture
def v1(host: livemod.Host) -> livemod.Module:
    return host.insmod(V1)


# ------------------------------------------------------------------ the upgrade itself


def test_replace_with_another_path_serves_v2(host: livemod.Host, v1: livemod.Module,
                                             probe: Any) -> None:
    assert host.hook("svc.which")() == ["1.0.0"]
    v2 = host.replace("svc", V2)
    assert (v2.name, v2.version, v2.state, v2.path) == ("svc", "2.0.0", State.LIVE, V2)
    assert v1.state is State.GONE
    assert v1.exports == {}
    assert host.hook("svc.which")() == ["2.0.0"]
    assert v2.which() == "2.0.0"
    assert rows(host) == {("svc", "2.0.0", State.LIVE)}
    assert probe.seen("svc", "exit") == [("svc", "exit", "1.0.0")]
    assert_clean(host)


def test_replace_rereads_the_same_path(host: livemod.Host, tmp_path: Path) -> None:
    live = tmp_path / "svc.py"
    shutil.copy(V1, live)
    old = host.insmod(live)
    assert host.hook("svc.which")() == ["1.0.0"]
    shutil.copy(V2, live)  # the reload case: the module's own file, edited
    new = host.replace("svc")
    assert (new.version, new.path, old.state) == ("2.0.0", str(live), State.GONE)
    assert host.hook("svc.which")() == ["2.0.0"]
    assert_clean(host)


def test_replace_rereads_an_edit_that_keeps_the_version(host: livemod.Host,
                                                        tmp_path: Path) -> None:
    live = tmp_path / "svc.py"
    text = Path(V1).read_text()
    live.write_text(text)
    host.insmod(live)
    live.write_text(text.replace('VERSION = "1.0.0"', 'VERSION = "1.0.0+edited"'))
    new = host.replace("svc")
    assert new.version == "1.0.0"
    assert host.hook("svc.which")() == ["1.0.0+edited"]
    assert_clean(host)


def test_handover_state_reaches_v2(host: livemod.Host, v1: livemod.Module,
                                   probe: Any) -> None:
    for _ in range(3):
        host.hook("svc.which")()
    v2 = host.replace("svc", V2)
    state = {"count": 3, "from": "1.0.0"}
    assert probe.seen("svc", "handover") == [("svc", "handover", "1.0.0")]
    assert probe.seen("svc", "init", "2.0.0") == [("svc", "init", "2.0.0", state)]
    assert v2.count() == 3  # v2 carries on counting where v1 stopped
    host.hook("svc.which")()
    assert v2.count() == 4
    assert_clean(host)


def test_upgrade_event_names_both_versions(host: livemod.Host, v1: livemod.Module) -> None:
    host.replace("svc", V2)
    [event] = [e for e in host.events() if e.kind == "upgrade"]
    assert event.module == "svc"
    assert (event.data["old"], event.data["version"]) == ("1.0.0", "2.0.0")
    assert "1.0.0" in event.message and "2.0.0" in event.message


def test_replace_keeps_the_hook_positions(host: livemod.Host) -> None:
    host.insmod(fixture("before"))
    host.insmod(V1)
    host.insmod(fixture("after"))
    hook = host.hook("svc.which")
    assert hook() == ["before", "1.0.0", "after"]
    host.replace("svc", V2)
    assert hook() == ["before", "2.0.0", "after"]
    host.replace("svc", V1, downgrade=True)
    assert hook() == ["before", "1.0.0", "after"]
    assert_clean(host)


# ------------------------------------------------------ failures leave v1 serving


def assert_v1_serving(host: livemod.Host, v1: livemod.Module, probe: Any,
                      before: set[str]) -> None:
    assert host.hook("svc.which")() == ["1.0.0"]
    assert v1.state is State.LIVE
    assert v1.which() == "1.0.0"
    assert rows(host) == {("svc", "1.0.0", State.LIVE)}
    assert probe.seen("svc", "exit") == []
    assert probe.seen("svc", "init", "1.0.0") == [("svc", "init", "1.0.0", None)]
    assert private_names() == before, "a failed v2 left a private module in sys.modules"
    assert host.tainted == ()


@pytest.mark.parametrize(
    ("broken", "error", "words"),
    [
        ("svc_parse", livemod.ManifestError, ["svc_parse.py", ":5", "syntax"]),
        ("svc_nonliteral", livemod.ManifestError, ["svc_nonliteral.py", "literal"]),
        ("svc_othername", livemod.UpgradeError, ["notsvc", "same module name"]),
        ("svc_missingdep", livemod.DependencyError, ["nosuchmod"]),
        ("svc_badbody", livemod.InitError, ["svc_badbody.py:8", "body is broken"]),
        ("svc_badinit", livemod.InitError, ["svc_badinit.py:12", "init is broken"]),
        ("svc_refuse", livemod.InitError, ["svc_refuse.py", "expected schema 2"]),
    ],
)
def test_a_failing_v2_leaves_v1_serving(
    host: livemod.Host, v1: livemod.Module, probe: Any, broken: str,
    error: type[livemod.LivemodError], words: list[str], tmp_path: Path,
) -> None:
    path = fixture(broken)
    if broken == "svc_parse":
        path = str(tmp_path / "svc_parse.py")
        Path(path).write_text(PARSE_ERROR)
    before = private_names()
    with pytest.raises(error) as caught:
        host.replace("svc", path)
    for word in words:
        assert word in str(caught.value)
    assert_v1_serving(host, v1, probe, before)
    # ... and the failure did not get in the way of a good upgrade afterwards.
    assert host.replace("svc", V2).version == "2.0.0"
    assert host.hook("svc.which")() == ["2.0.0"]
    assert_clean(host)


def test_v2_refusing_the_handover_rolls_back(host: livemod.Host, v1: livemod.Module,
                                             probe: Any) -> None:
    before = private_names()
    with pytest.raises(livemod.InitError) as caught:
        host.replace("svc", fixture("svc_refuse"))
    assert isinstance(caught.value.__cause__, ValueError)
    # v2 saw the state v1 handed over, and refused it.
    assert probe.seen("svc", "refuse") == [("svc", "refuse", {"count": 0, "from": "1.0.0"})]
    assert_v1_serving(host, v1, probe, before)
    assert [e.kind for e in host.events()].count("upgrade") == 0


def test_a_failing_handover_in_v1_leaves_it_serving(host: livemod.Host,
                                                    probe: Any) -> None:
    old = host.insmod(fixture("svc_badhandover"))
    before = private_names()
    with pytest.raises(livemod.InitError) as caught:
        host.replace("svc", V2)
    assert isinstance(caught.value.__cause__, RuntimeError)
    assert "handover" in str(caught.value)
    assert host.hook("svc.which")() == ["1.0.0"]
    assert old.state is State.LIVE
    assert rows(host) == {("svc", "1.0.0", State.LIVE)}
    assert probe.seen("svc", "exit") == []
    assert probe.seen("svc", "init") == []  # v2 never got as far as init
    assert private_names() == before
    assert host.tainted == ()


def test_downgrade_is_refused_unless_asked(host: livemod.Host, probe: Any) -> None:
    v2 = host.insmod(V2)
    with pytest.raises(livemod.UpgradeError, match="downgrade"):
        host.replace("svc", V1)
    assert (v2.state, host.hook("svc.which")()) == (State.LIVE, ["2.0.0"])
    assert probe.seen("svc", "exit") == []
    v1 = host.replace("svc", V1, downgrade=True)
    assert v1.version == "1.0.0"
    assert host.hook("svc.which")() == ["1.0.0"]
    assert_clean(host)


def test_params_carry_over_and_explicit_ones_override(host: livemod.Host) -> None:
    host.insmod(V1, greeting="hi", size="3")
    v2 = host.replace("svc", V2)
    assert dict(v2.params.as_dict()) == {"greeting": "hi", "size": 3}
    again = host.replace("svc", V1, downgrade=True, size="5")
    assert dict(again.params.as_dict()) == {"greeting": "hi", "size": 5}
    with pytest.raises(livemod.ParamError):
        host.replace("svc", V2, size="many")
    assert host.hook("svc.which")() == ["1.0.0"]
    assert_clean(host)


# ----------------------------------------------------------------- atomic switch


@pytest.mark.race
def test_the_switch_is_atomic_per_hook(host: livemod.Host) -> None:
    host.insmod(fixture("before"))
    host.insmod(V1)
    host.insmod(fixture("after"))
    hook = host.hook("svc.which")
    good = (["before", "1.0.0", "after"], ["before", "2.0.0", "after"])
    rounds = 50 * race_scale()  # even: it ends on v1
    stop = threading.Event()
    start = threading.Barrier(9)
    bad: list[list[Any]] = []
    seen = [{"1.0.0": 0, "2.0.0": 0} for _ in range(8)]

    def caller(counts: dict[str, int]) -> None:
        start.wait()
        while not stop.is_set():
            result = hook()
            if result in good:
                counts[result[1]] += 1
            else:
                bad.append(result)

    threads = [threading.Thread(target=caller, args=(seen[i],), name=f"caller-{i}")
               for i in range(8)]
    for t in threads:
        t.start()
    old_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # many thread switches, also inside the publish
    try:
        start.wait()
        for round_ in range(rounds):
            if round_ % 2 == 0:
                host.replace("svc", V2)
            else:
                host.replace("svc", V1, downgrade=True)
    finally:
        sys.setswitchinterval(old_interval)
        stop.set()
        for t in threads:
            t.join(10)
    assert bad == []
    total = {v: sum(c[v] for c in seen) for v in ("1.0.0", "2.0.0")}
    assert total["1.0.0"] > 0 and total["2.0.0"] > 0, total
    assert hook() == ["before", "1.0.0", "after"]  # an even number of switches: back on v1
    assert rows(host) == {("before", "0", State.LIVE), ("svc", "1.0.0", State.LIVE),
                          ("after", "0", State.LIVE)}
    assert [e.kind for e in host.events()].count("upgrade") == rounds
    assert_clean(host)


# ------------------------------------------------------------ calls in flight on v1


def test_a_call_in_flight_finishes_on_v1_and_replace_waits_for_it(
    host: livemod.Host, v1: livemod.Module, probe: Any, wait_for: Callable[..., Any]
) -> None:
    slow, slow_out = in_thread(lambda: host.hook("svc.block")("a"), "slow-call")
    assert probe.gate("svc.entered.a").wait(5)

    def upgrade() -> livemod.Module:
        m = host.replace("svc", V2, timeout=30.0)
        probe.record("test", "replace-returned")
        return m

    upgrader, up_out = in_thread(upgrade, "upgrader")
    # New calls already go to v2 while the old call is still inside v1.
    wait_for(lambda: host.hook("svc.which")() == ["2.0.0"], what="v2 to be switched in")
    probe.gate("svc.release.b").set()
    assert host.hook("svc.block")("b") == ["2.0.0"]
    assert upgrader.is_alive(), "replace returned while a call was still inside v1"
    assert rows(host) == {("svc", "1.0.0", State.GOING), ("svc", "2.0.0", State.LIVE)}
    assert probe.seen("svc", "exit") == []

    probe.gate("svc.release.a").set()
    slow.join(10)
    upgrader.join(10)
    assert slow_out == {"result": ["1.0.0"]}
    assert up_out["result"].version == "2.0.0"
    order = [e for e in probe.events if e[:2] in (("svc", "leave"), ("svc", "exit"),
                                                  ("test", "replace-returned"))]
    assert order == [("svc", "leave", "2.0.0", "b"), ("svc", "leave", "1.0.0", "a"),
                     ("svc", "exit", "1.0.0"), ("test", "replace-returned")]
    assert v1.state is State.GONE
    assert rows(host) == {("svc", "2.0.0", State.LIVE)}
    assert_clean(host)


def test_a_hold_past_the_timeout_leaves_v1_going_until_released(
    host: livemod.Host, v1: livemod.Module, probe: Any, wait_for: Callable[..., Any]
) -> None:
    hold = host.hold("svc")
    v2 = host.replace("svc", V2, timeout=0.2)
    assert v2.state is State.LIVE
    assert host.hook("svc.which")() == ["2.0.0"]
    assert rows(host) == {("svc", "1.0.0", State.GOING), ("svc", "2.0.0", State.LIVE)}
    assert v1.state is State.GOING
    assert v2.removal_pending == ("1.0.0",)  # replace says so
    assert probe.seen("svc", "exit") == []
    [pending] = [e for e in host.events() if e.kind == "upgrade-pending"]
    assert "1.0.0" in pending.message and "hold" in pending.message

    hold.release()
    wait_for(lambda: v1.state is State.GONE, what="v1 to go GONE after the hold is released")
    assert v2.removal_pending == ()
    wait_for(lambda: rows(host) == {("svc", "2.0.0", State.LIVE)}, what="v1 out of lsmod")
    wait_for(lambda: not [t for t in threading.enumerate()
                          if t.name.startswith("livemod-reap")], what="the reaper to end")
    assert probe.seen("svc", "exit") == [("svc", "exit", "1.0.0")]
    assert host.hook("svc.which")() == ["2.0.0"]
    assert_clean(host)


# ----------------------------------------------------------------------- dependents


def test_a_require_dependent_follows_without_reload(host: livemod.Host,
                                                    v1: livemod.Module) -> None:
    user = host.insmod(fixture("user_require"))
    ask = host.hook("user.ask")
    assert ask() == [("require", "1.0.0")]
    host.replace("svc", V2)
    assert ask() == [("require", "2.0.0")]
    assert user.state is State.LIVE  # the same instance: not reloaded
    assert {r.name: r.used_by for r in host.lsmod()}["svc"] == ("user_require",)
    assert_clean(host)


def test_a_from_import_dependent_refuses_the_upgrade_without_cascade(
    host: livemod.Host, v1: livemod.Module, probe: Any
) -> None:
    user = host.insmod(fixture("user_from"))
    before = private_names()
    with pytest.raises(livemod.UpgradeError) as caught:
        host.replace("svc", V2)
    assert "user_from" in str(caught.value) and "cascade" in str(caught.value)
    assert host.hook("user.ask")() == [("from", "1.0.0")]
    assert (v1.state, user.state) == (State.LIVE, State.LIVE)
    assert probe.seen("svc", "handover") == []  # refused before anything ran
    assert private_names() == before
    assert host.tainted == ()


def test_cascade_reloads_a_from_import_dependent(host: livemod.Host, v1: livemod.Module,
                                                 probe: Any) -> None:
    user = host.insmod(fixture("user_from"))
    v2 = host.replace("svc", V2, cascade=True)
    assert host.hook("user.ask")() == [("from", "2.0.0")]
    assert (v1.state, user.state, v2.state) == (State.GONE, State.GONE, State.LIVE)
    # The reloaded dependent comes up beside the old one, which then exits.
    assert probe.seen("user_from") == [("user_from", "init"), ("user_from", "init"),
                                       ("user_from", "exit")]
    assert rows(host) == {("svc", "2.0.0", State.LIVE), ("user_from", "1.0.0", State.LIVE)}
    assert_clean(host)


# --------------------------------------------------------------------------- async


def test_areplace_with_async_handover_and_init(probe: Any) -> None:
    async def main() -> None:
        loop_id = id(asyncio.get_running_loop())
        async with livemod.Host(timeout=5.0) as host:
            await host.ainsmod(fixture("svc_async_v1"))
            hook = host.hook("svc.which")
            assert await hook.acall() == ["1.0.0"]
            v2 = await host.areplace("svc", fixture("svc_async_v2"))
            assert v2.version == "2.0.0"
            assert await hook.acall() == ["2.0.0"]
            state = {"from": "1.0.0", "loop": loop_id}
            assert probe.seen("svc", "async-init") == [("svc", "async-init", state, loop_id)]
            assert host.leaks() == [] and host.tainted == ()

    asyncio.run(main())


@pytest.fixture(autouse=True)
def _gates_open(probe: Any) -> Iterator[None]:
    """A failing test must not leave a fixture call blocked on a gate."""
    yield
    for name in ("a", "b"):
        probe.gate(f"svc.release.{name}").set()


# ------------------------------------------------- regressions (bugs found here, fixed)


def test_cascade_with_a_failing_dependent_leaves_v1_serving(
    host: livemod.Host, v1: livemod.Module, tmp_path: Path
) -> None:
    dependent = tmp_path / "user_from.py"
    shutil.copy(fixture("user_from"), dependent)
    host.insmod(dependent)
    dependent.write_text(dependent.read_text().replace("def ask():", "def ask(:"))
    before = private_names()
    with pytest.raises(livemod.ManifestError, match=r"user_from\.py"):
        host.replace("svc", V2, cascade=True)
    assert rows(host) == {("svc", "1.0.0", State.LIVE), ("user_from", "1.0.0", State.LIVE)}
    assert host.hook("svc.which")() == ["1.0.0"]
    assert host.hook("user.ask")() == [("from", "1.0.0")]
    assert private_names() == before
    assert host.tainted == ()


def test_cascade_with_a_dependent_failing_init_leaves_v1_serving(
    host: livemod.Host, v1: livemod.Module, probe: Any, tmp_path: Path
) -> None:
    dependent = tmp_path / "user_from.py"
    shutil.copy(fixture("user_from"), dependent)
    host.insmod(dependent)
    dependent.write_text(dependent.read_text().replace(
        "    mod.hook(\"user.ask\").add(ask)", "    raise RuntimeError(\"user_from init broke\")"))
    before = private_names()
    with pytest.raises(livemod.InitError, match="user_from init broke"):
        host.replace("svc", V2, cascade=True)
    assert rows(host) == {("svc", "1.0.0", State.LIVE), ("user_from", "1.0.0", State.LIVE)}
    assert host.hook("svc.which")() == ["1.0.0"]
    assert host.hook("user.ask")() == [("from", "1.0.0")]
    assert probe.seen("svc", "exit") == [] and probe.seen("user_from", "exit") == []
    assert private_names() == before
    assert host.tainted == ()


def test_an_upgrade_that_breaks_a_dependents_constraint_is_refused(
    host: livemod.Host, v1: livemod.Module, tmp_path: Path
) -> None:
    dependent = tmp_path / "pinned.py"
    dependent.write_text(
        '__livemod__ = {"name": "pinned", "depends": ["svc<2"]}\n\n\n'
        'def init(mod):\n    mod.require("svc")\n'
    )
    host.insmod(dependent)
    with pytest.raises(livemod.DependencyError, match="pinned"):
        host.replace("svc", V2)
    assert rows(host) == {("svc", "1.0.0", State.LIVE), ("pinned", "0", State.LIVE)}
    assert host.hook("svc.which")() == ["1.0.0"]


THREADED = str(Path(__file__).parent / "fixtures" / "modules" / "threaded.py")


def test_reloading_a_module_with_managed_threads_from_its_own_file(
    host: livemod.Host,
) -> None:
    # v2's threads run the same file as v1's: they must not count as v1 still running, and
    # v1's own managed threads are told to stop and joined, as at rmmod.
    old = host.insmod(THREADED)
    old_threads = [t for t in threading.enumerate() if t.name.startswith("threaded-")]
    assert len(old_threads) == 2
    new = host.replace("threaded", timeout=30.0)
    assert old.state is State.GONE and new.state is State.LIVE
    assert rows(host) == {("threaded", "1.0.0", State.LIVE)}
    assert not any(t.is_alive() for t in old_threads)
    assert host.hook("threaded.request")("Ada") == ["hi, Ada"]
    assert not [e for e in host.events() if e.kind == "upgrade-pending"]
    assert_clean(host)
    host.rmmod("threaded")
    assert host.lsmod() == []
