"""GOING is never a dead end: every failure after unpublish ends LIVE again or GONE.

The failures are livemod's own, injected by replacing one internal step with one that
raises (the module, the host, its threads and hooks are all real).
"""

from __future__ import annotations

import inspect
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

import livemod
from livemod import State, _drain, _hooktable, _leak_watch, _loader, _quiesce

pytestmark = pytest.mark.usefixtures("no_stray_threads")

MODULES = Path(__file__).parent / "fixtures" / "modules"
BASIC = str(MODULES / "basic.py")
THREADED = str(MODULES / "threaded.py")


def boom(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError("injected failure")


def taints(host: livemod.Host) -> list[tuple[str, str]]:
    return [(t.flag, t.reason) for t in host.tainted]


def test_a_failure_before_exit_republishes_the_module(
    host: livemod.Host, monkeypatch: pytest.MonkeyPatch
) -> None:
    host.insmod(BASIC)
    monkeypatch.setattr(_quiesce, "running_in", boom)
    with pytest.raises(RuntimeError, match="injected"):
        host.rmmod("basic")
    assert [(r.name, r.state) for r in host.lsmod()] == [("basic", State.LIVE)]
    assert host.hook("basic.ping")(1) == [("pong", 1)]
    assert any(e.kind == "unload-refused" and "injected" in e.message for e in host.events())
    monkeypatch.undo()
    host.rmmod("basic")
    assert host.lsmod() == []


@pytest.mark.parametrize(
    "step", [pytest.param("leak watch", marks=pytest.mark.asserts_leak), "sys.modules"])
def test_a_failure_after_exit_began_still_ends_gone_and_tainted(
    host: livemod.Host, monkeypatch: pytest.MonkeyPatch, probe: Any, step: str
) -> None:
    host.insmod(THREADED)
    if step == "leak watch":
        monkeypatch.setattr(_leak_watch, "watch", boom)
    else:
        monkeypatch.setattr(_loader, "remove_modules", boom)
    host.rmmod("threaded")  # returns: the module is gone, the host says what went wrong
    assert host.lsmod() == []
    # (left in sys.modules, the module also leaks: that is tainted and reported too)
    flag, reason = taints(host)[0]
    assert flag == "unload-failed" and "injected failure" in reason
    assert any(e.kind == "taint" and "injected" in e.message for e in host.events())
    assert not [t for t in threading.enumerate() if t.name.startswith("threaded-")]
    monkeypatch.undo()
    for name in [n for n in sys.modules if n.startswith("livemod.mods.")
                 and n.endswith(".threaded")]:
        del sys.modules[name]  # what the failed step did not take out
    host.insmod(THREADED)  # the name is free again
    host.rmmod("threaded")


def test_rmmod_of_a_module_left_going_finishes_the_job(
    host: livemod.Host, monkeypatch: pytest.MonkeyPatch
) -> None:
    host.insmod(BASIC)
    # The unload fails, and so does putting the module back: it is left GOING.
    monkeypatch.setattr(_quiesce, "running_in", boom)
    monkeypatch.setattr(_hooktable.HookTable, "publish_unlocked", boom)
    with pytest.raises(RuntimeError):
        host.rmmod("basic")
    assert [(r.name, r.state) for r in host.lsmod()] == [("basic", State.GOING)]
    monkeypatch.undo()
    host.rmmod("basic")
    assert host.lsmod() == []
    host.insmod(BASIC)
    assert host.hook("basic.ping")(2) == [("pong", 2)]


def test_an_upgrade_whose_old_version_fails_to_drain_ends_it_gone(
    host: livemod.Host, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = host.insmod(THREADED)
    monkeypatch.setattr(_quiesce, "running_in", boom)  # only v1's drain looks at stacks
    with pytest.raises(RuntimeError, match="injected"):
        host.replace("threaded", timeout=5.0)
    monkeypatch.undo()
    # v2 serves already, so v1 cannot be LIVE again: it is GONE, and the host says why.
    assert old.state is State.GONE
    assert [(r.name, r.state) for r in host.lsmod()] == [("threaded", State.LIVE)]
    assert host.hook("threaded.request")("Ada") == ["hi, Ada"]
    flag, reason = taints(host)[0]
    assert flag == "unload-failed" and "waiting for the old version to drain" in reason
    assert len([t for t in threading.enumerate() if t.name.startswith("threaded-")]) == 2
    host.rmmod("threaded")


def waiting_for_a_wakeup(thread: threading.Thread) -> bool:
    """``thread`` is blocked in ``_drain``'s wait for a hold to be released."""
    lines, first = inspect.getsourcelines(_drain._wait)
    line = first + next(i for i, text in enumerate(lines) if "wakeups.get(" in text)
    frame = sys._current_frames().get(thread.ident or 0)
    return frame is not None and frame.f_code is _drain._wait.__code__ \
        and frame.f_lineno == line


def test_a_removal_pending_whose_reaper_fails_ends_gone(
    host: livemod.Host, monkeypatch: pytest.MonkeyPatch, wait_for: Any
) -> None:
    old = host.insmod(BASIC)
    hold = host.hold("basic")
    hold.__enter__()
    new = host.replace("basic", timeout=0.05)  # v1 is held: removal pending, a reaper waits
    assert new.removal_pending and old.state is State.GOING
    reaper = next(t for t in threading.enumerate() if t.name == "livemod-reap-basic")
    wait_for(lambda: waiting_for_a_wakeup(reaper), 10, "the reaper to wait for the hold")
    monkeypatch.setattr(_quiesce, "running_in", boom)
    hold.__exit__(None, None, None)  # wakes the reaper, whose next look raises
    wait_for(lambda: old.state is State.GONE, 10, "the reaper to finish v1")
    wait_for(lambda: not [t for t in threading.enumerate()
                          if t.name.startswith("livemod-reap")], 10, "the reaper to end")
    monkeypatch.undo()
    assert [(r.name, r.state) for r in host.lsmod()] == [("basic", State.LIVE)]
    flag, reason = taints(host)[0]
    assert flag == "unload-failed" and "waiting for the old version to drain" in reason
