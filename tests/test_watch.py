"""Watch mode (livemod.watch) against a real Host, real files and real watchfiles.

The watcher runs in a thread until a ``threading.Event`` is set. watchfiles needs a moment
to start watching after ``watch`` is called, so each test first "warms up": it re-saves a
small module until the watcher reports upgrading it, which proves the watcher is live.
Every wait is bounded.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import livemod
from livemod import State
from livemod.watch import HostTarget, watch

pytest.importorskip("watchfiles")

pytestmark = pytest.mark.usefixtures("no_stray_threads")

UPGRADE = Path(__file__).parent / "fixtures" / "upgrade"

WARM = '''"""Touched by the tests until the watcher reports it: proves the watcher is live."""

__livemod__ = {{"name": "warm", "version": "{version}"}}
'''

PACKAGE_INIT = '''"""A package module whose hook answers from a submodule."""

__livemod__ = {"name": "pkgmod", "version": "1.0.0"}

from .part import answer


def init(mod):
    mod.hook("pkg.answer").add(answer)
'''

PART = '''def answer():
    return "{answer}"
'''

UPGRADED = re.compile(r"^upgraded (\S+) (\S+) -> (\S+) in [0-9.]+ ms$")


class Watcher:
    """``livemod.watch.watch`` running in a thread; collects its report lines."""

    def __init__(self, host: livemod.Host, folder: Path) -> None:
        self.folder = folder
        self.lines: list[str] = []
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(host,), name="watcher")
        self.thread.start()

    def _run(self, host: livemod.Host) -> None:
        try:
            watch(HostTarget(host), [str(self.folder)], report=self.lines.append,
                  stop=self.stop, debounce_ms=50)
        except BaseException as exc:
            self.error = exc

    def about(self, name: str) -> list[str]:
        return [line for line in self.lines if f" {name} " in line or f" {name}:" in line]

    def wait_report(self, wait_for: Callable[..., Any], name: str, count: int) -> str:
        """Wait until ``name`` has been reported ``count`` times; return the last line."""
        wait_for(lambda: len(self.about(name)) >= count, timeout=10.0,
                 what=f"report {count} about {name!r}; so far {self.lines}")
        return self.about(name)[count - 1]


@pytest.fixture
def watching(host: livemod.Host, tmp_path: Path,
             wait_for: Callable[..., Any]) -> Iterator[Callable[[], Watcher]]:
    """``start()`` starts a watcher on ``tmp_path`` and returns it once it is proven live.

    Tests write and load their modules first, so no save from the set-up is reported.
    """
    watchers: list[Watcher] = []

    def start() -> Watcher:
        warm = tmp_path / "warm.py"
        warm.write_text(WARM.format(version="1.0.0"))
        host.insmod(warm)
        watcher = Watcher(host, tmp_path)
        watchers.append(watcher)
        # It starts watching a moment after it is called: re-save until it notices.
        version = "1.0.0"
        for attempt in range(1, 41):
            version = f"1.0.{attempt}"
            warm.write_text(WARM.format(version=version))
            try:
                wait_for(lambda: watcher.about("warm"), timeout=0.25)
                break
            except AssertionError:
                continue
        # Every save of the warm-up is handled before the test begins.
        wait_for(lambda: live_version(host, "warm") == version, timeout=10.0,
                 what=f"warm {version} to be loaded; reports: {watcher.lines}")
        return watcher

    yield start
    for watcher in watchers:
        watcher.stop.set()
        watcher.thread.join(10)
        assert not watcher.thread.is_alive(), "watch did not stop when its event was set"
        assert watcher.error is None


def line_count(watcher: Watcher, name: str) -> int:
    return len(watcher.about(name))


def live_version(host: livemod.Host, name: str) -> str | None:
    return next((s.version for s in host.lsmod() if s.name == name and s.state is State.LIVE),
                None)


def test_saving_a_new_version_upgrades_it(
    host: livemod.Host, watching: Callable[[], Watcher], tmp_path: Path,
    wait_for: Callable[..., Any],
) -> None:
    live = tmp_path / "svc.py"
    live.write_text((UPGRADE / "svc_v1.py").read_text())
    host.insmod(live)
    watcher = watching()
    seen = line_count(watcher, "svc")
    live.write_text((UPGRADE / "svc_v2.py").read_text())
    wait_for(lambda: host.hook("svc.which")() == ["2.0.0"], timeout=10.0,
             what=f"svc 2.0.0 to serve; reports: {watcher.lines}")
    line = watcher.wait_report(wait_for, "svc", seen + 1)
    match = UPGRADED.match(line)
    assert match, line
    assert match.groups() == ("svc", "1.0.0", "2.0.0")
    assert {(s.name, s.version, s.state) for s in host.lsmod()} >= {("svc", "2.0.0", State.LIVE)}
    assert host.leaks() == []


def test_a_syntax_error_keeps_the_running_version(
    host: livemod.Host, watching: Callable[[], Watcher], tmp_path: Path,
    wait_for: Callable[..., Any],
) -> None:
    live = tmp_path / "svc.py"
    live.write_text((UPGRADE / "svc_v1.py").read_text())
    host.insmod(live)
    watcher = watching()
    seen = line_count(watcher, "svc")
    broken = (UPGRADE / "svc_v2.py").read_text().replace("def which():", "def which(:")
    live.write_text(broken)
    line = watcher.wait_report(wait_for, "svc", seen + 1)
    number = broken.splitlines().index("def which(:") + 1
    assert line.startswith("x svc: kept 1.0.0 running:"), line
    assert f"{live}:{number}" in line, line
    assert host.hook("svc.which")() == ["1.0.0"]
    assert {(s.name, s.version, s.state) for s in host.lsmod() if s.name == "svc"} == {
        ("svc", "1.0.0", State.LIVE)}


def test_a_failing_init_keeps_the_running_version(
    host: livemod.Host, watching: Callable[[], Watcher], tmp_path: Path,
    wait_for: Callable[..., Any],
) -> None:
    live = tmp_path / "svc.py"
    live.write_text((UPGRADE / "svc_v1.py").read_text())
    host.insmod(live)
    watcher = watching()
    seen = line_count(watcher, "svc")
    live.write_text((UPGRADE / "svc_badinit.py").read_text())
    line = watcher.wait_report(wait_for, "svc", seen + 1)
    assert line.startswith("x svc: kept 1.0.0 running:"), line
    assert "svc.py:12" in line and "init is broken" in line, line
    assert host.hook("svc.which")() == ["1.0.0"]
    # Fixed again: the next save upgrades.
    live.write_text((UPGRADE / "svc_v2.py").read_text())
    wait_for(lambda: host.hook("svc.which")() == ["2.0.0"], timeout=10.0,
             what=f"svc 2.0.0 to serve; reports: {watcher.lines}")
    assert UPGRADED.match(watcher.wait_report(wait_for, "svc", seen + 2))


def test_a_change_inside_a_package_upgrades_its_module(
    host: livemod.Host, watching: Callable[[], Watcher], tmp_path: Path,
    wait_for: Callable[..., Any],
) -> None:
    package = tmp_path / "pkgmod"
    package.mkdir()
    (package / "__init__.py").write_text(PACKAGE_INIT)
    (package / "part.py").write_text(PART.format(answer="first"))
    old = host.insmod(package)
    assert host.hook("pkg.answer")() == ["first"]
    watcher = watching()
    seen = line_count(watcher, "pkgmod")
    (package / "part.py").write_text(PART.format(answer="second"))
    wait_for(lambda: host.hook("pkg.answer")() == ["second"], timeout=10.0,
             what=f"the package to be upgraded; reports: {watcher.lines}")
    assert UPGRADED.match(watcher.wait_report(wait_for, "pkgmod", seen + 1))
    assert old.state is State.GONE
    assert host.leaks() == []


def test_stop_ends_the_watcher(host: livemod.Host, tmp_path: Path,
                               wait_for: Callable[..., Any]) -> None:
    watcher = Watcher(host, tmp_path)
    wait_for(lambda: watcher.lines, what="the watcher to start")
    assert watcher.lines[0].startswith(f"watching {tmp_path}")
    watcher.stop.set()
    watcher.thread.join(10)
    assert not watcher.thread.is_alive()
    assert watcher.error is None
