"""``insmod`` and ``replace`` read a module's files before they take the operation lock
(``Host.insmod``; livemod._upgrade, step 0), and ``replace`` re-checks under the lock that
they were read for the version that is still LIVE.

Another operation holds the lock here for real: an ``insmod`` whose ``init`` waits on a
gate the test opens (``lm_probe``), as a slow init would.
"""

from __future__ import annotations

import inspect
import shutil
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

import livemod
from conftest import wait_for
from helpers import in_thread
from livemod import State, _upgrade

pytestmark = pytest.mark.usefixtures("no_stray_threads")

UPGRADE = Path(__file__).parent / "fixtures" / "upgrade"

SLOW_INIT = '''
"""Holds the operation lock (its insmod does) until the test opens the gate."""
import lm_probe

__livemod__ = {"name": "slowinit"}


def init(mod):
    lm_probe.gate("slowinit.in").set()
    if not lm_probe.gate("slowinit.go").wait(30):
        raise TimeoutError("the test never opened slowinit.go")
    then = lm_probe.kept.pop("then", None)
    if then is not None:
        then()  # another operation, nested in this one (the lock is reentrant)
'''


def _lock_line() -> int:
    lines, first = inspect.getsourcelines(_upgrade.replace)
    return first + next(i for i, text in enumerate(lines) if "with host.op_lock" in text)


def waiting_for_the_lock(thread: threading.Thread) -> bool:
    """``thread`` has read the files and waits for the operation lock in ``replace``."""
    frame = sys._current_frames().get(thread.ident or 0)
    return (frame is not None and frame.f_code is _upgrade.replace.__code__
            and frame.f_lineno == _lock_line())


def versioned(source: Path, target: Path, version: str) -> Path:
    text = source.read_text().replace('"1.0.0"', f'"{version}"')
    target.write_text(text)
    return target


@pytest.fixture
def svc(host: livemod.Host, tmp_path: Path) -> livemod.Module:
    file = tmp_path / "svc.py"
    shutil.copy(UPGRADE / "svc_v1.py", file)
    return host.insmod(file)


def test_the_new_version_is_read_before_the_lock(
    host: livemod.Host, svc: livemod.Module, tmp_path: Path, probe: Any
) -> None:
    # Loaded before the slow insmod takes the lock (the fixture order), then refused for
    # its broken file while that insmod still holds it.
    file = tmp_path / "slowinit.py"
    file.write_text(SLOW_INIT)
    holder, held = in_thread(lambda: host.insmod(file), name="slow-insmod")
    assert probe.gate("slowinit.in").wait(10)
    broken = tmp_path / "svc_broken.py"
    broken.write_text('__livemod__ = {"name": "svc", "version": "2.0.0"}\ndef f(:\n')
    try:
        thread, out = in_thread(lambda: host.replace("svc", broken), name="replace")
        thread.join(10)
        assert not thread.is_alive(), "replace waited for the operation lock before reading"
        assert isinstance(out.get("error"), livemod.ManifestError), out
        assert "svc_broken.py" in str(out["error"])
        assert holder.is_alive() and svc.state is State.LIVE
    finally:
        probe.gate("slowinit.go").set()
        holder.join(30)
    assert "error" not in held, held
    assert host.hook("svc.which")() == ["1.0.0"]


def test_cascade_reads_the_dependents_before_the_lock(
    host: livemod.Host, svc: livemod.Module, tmp_path: Path, probe: Any
) -> None:
    dependent = tmp_path / "user_from.py"
    shutil.copy(UPGRADE / "user_from.py", dependent)
    host.insmod(dependent)
    dependent.write_text(dependent.read_text().replace("def ask():", "def ask(:"))
    file = tmp_path / "slowinit.py"
    file.write_text(SLOW_INIT)
    holder, held = in_thread(lambda: host.insmod(file), name="slow-insmod")
    assert probe.gate("slowinit.in").wait(10)
    try:
        thread, out = in_thread(
            lambda: host.replace("svc", UPGRADE / "svc_v2.py", cascade=True), name="replace")
        thread.join(10)
        assert not thread.is_alive(), "replace waited for the lock before reading dependents"
        assert isinstance(out.get("error"), livemod.ManifestError), out
        assert "user_from.py" in str(out["error"])
    finally:
        probe.gate("slowinit.go").set()
        holder.join(30)
    assert "error" not in held, held
    assert host.hook("user.ask")() == [("from", "1.0.0")]


def test_a_version_replaced_between_the_read_and_the_lock_is_read_again(
    host: livemod.Host, svc: livemod.Module, tmp_path: Path, probe: Any
) -> None:
    own = Path(svc.path)
    versioned(UPGRADE / "svc_v1.py", own, "1.5.0")  # what the waiting reload reads
    third = versioned(UPGRADE / "svc_v1.py", tmp_path / "svc3.py", "3.0.0")
    file = tmp_path / "slowinit.py"
    file.write_text(SLOW_INIT)
    holder, held = in_thread(lambda: host.insmod(file), name="slow-insmod")
    assert probe.gate("slowinit.in").wait(10)
    # While the reload waits for the lock, the slow insmod upgrades svc to another file.
    probe.kept["then"] = lambda: host.replace("svc", third)
    try:
        reload, out = in_thread(lambda: host.replace("svc"), name="reload")
        wait_for(lambda: waiting_for_the_lock(reload), 10, "the reload to wait for the lock")
    finally:
        probe.gate("slowinit.go").set()
        holder.join(30)
    reload.join(30)
    assert "error" not in held, held
    # "Re-read its own file" means the file of the version LIVE when the lock is taken:
    # svc3.py (3.0.0), not the 1.5.0 read for the version that was replaced meanwhile
    # (installing that would have been refused as a downgrade).
    assert "error" not in out, out
    assert (out["result"].version, out["result"].path) == ("3.0.0", str(third))
    assert [(r.name, r.version, r.state) for r in host.lsmod()
            if r.name == "svc"] == [("svc", "3.0.0", State.LIVE)]


def test_insmod_reads_the_file_before_the_lock(
    host: livemod.Host, tmp_path: Path, probe: Any
) -> None:
    file = tmp_path / "slowinit.py"
    file.write_text(SLOW_INIT)
    holder, held = in_thread(lambda: host.insmod(file), name="slow-insmod")
    assert probe.gate("slowinit.in").wait(10)
    broken = tmp_path / "broken.py"
    broken.write_text('__livemod__ = {"name": "broken"}\ndef f(:\n')
    try:
        thread, out = in_thread(lambda: host.insmod(broken), name="insmod")
        thread.join(10)
        assert not thread.is_alive(), "insmod waited for the operation lock before reading"
        assert isinstance(out.get("error"), livemod.ManifestError), out
        assert "broken.py" in str(out["error"]) and holder.is_alive()
    finally:
        probe.gate("slowinit.go").set()
        holder.join(30)
    assert "error" not in held, held
    assert [r.name for r in host.lsmod()] == ["slowinit"]
