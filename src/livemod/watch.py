"""Watch mode: upgrade modules as their files are saved (``livemod watch``).

For development. Each saved change under the watched folders is mapped to the loaded
module that owns the file (its ``.py`` file, or any file inside its package folder), and
that module is upgraded in place with ``replace`` (re-reading its own path, reloading
dependents that imported it directly). A syntax error or a failing init leaves the running
version serving; the error is printed with file and line. Each upgrade is printed with how
long it took.

It works against anything that can list modules and upgrade one: a ``Host`` in the same
process (``HostTarget``) or a running host over its control socket (the CLI passes a
socket-backed target). File watching uses the ``watchfiles`` package (the ``watch`` extra),
which debounces bursts of writes from editors.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, final

from .errors import LivemodError

if TYPE_CHECKING:
    from livemod import Host

__all__ = ["HostTarget", "Target", "UpgradeOutcome", "owners", "upgrade_changed", "watch"]


class Target(Protocol):
    """What watch mode drives: a host, in process or over a socket."""

    def modules(self) -> list[tuple[str, str, str]]:
        """``(name, version, path)`` of each LIVE module."""
        ...

    def upgrade(self, name: str) -> str:
        """Upgrade ``name`` from its own path; return the new version."""
        ...


@final
class HostTarget:
    """A ``livemod.Host`` in this process."""

    def __init__(self, host: Host) -> None:
        self._host = host

    def modules(self) -> list[tuple[str, str, str]]:
        return [(s.name, s.version, s.path) for s in self._host.lsmod() if s.state.name == "LIVE"]

    def upgrade(self, name: str) -> str:
        return self._host.replace(name, cascade=True, downgrade=True).version


@final
@dataclass(frozen=True, slots=True)
class UpgradeOutcome:
    """One module's upgrade after a change: done (``error`` empty) or refused."""

    name: str
    old_version: str
    new_version: str
    seconds: float
    error: str

    def __str__(self) -> str:
        if self.error:
            return f"x {self.name}: kept {self.old_version} running: {self.error}"
        return (f"upgraded {self.name} {self.old_version} -> {self.new_version} "
                f"in {self.seconds * 1000:.1f} ms")


def owners(changed: Iterable[str], modules: Sequence[tuple[str, str, str]]) -> list[str]:
    """Names of the modules owning any of the ``changed`` paths, in load order."""
    paths = [os.path.abspath(p) for p in changed]
    found = []
    for name, _version, path in modules:
        root = os.path.abspath(path)
        if any(p == root or p.startswith(root + os.sep) for p in paths):
            found.append(name)
    return found


def upgrade_changed(target: Target, changed: Iterable[str]) -> list[UpgradeOutcome]:
    """Upgrade every module that owns a changed file; errors are reported, not raised."""
    modules = target.modules()
    versions = {name: version for name, version, _ in modules}
    outcomes = []
    for name in owners(changed, modules):
        started = time.perf_counter()
        try:
            new = target.upgrade(name)
            error = ""
        except LivemodError as exc:
            new, error = versions[name], str(exc)
        outcomes.append(UpgradeOutcome(name, versions[name], new,
                                       time.perf_counter() - started, error))
    return outcomes


def watch(
    target: Target,
    folders: Sequence[str],
    *,
    report: Callable[[str], object] = print,
    stop: threading.Event | None = None,
    debounce_ms: int = 200,
) -> None:
    """Upgrade modules on every saved change under ``folders`` until ``stop`` is set.

    Raises:
        LivemodError: the ``watchfiles`` package is not installed (pip install livemod[watch]).
    """
    try:
        import watchfiles
    except ImportError:
        raise LivemodError(
            "livemod watch needs the watchfiles package: pip install 'livemod[watch]'"
        ) from None
    report(f"watching {', '.join(folders)} (Ctrl-C to stop)")
    for changes in watchfiles.watch(
        *folders, debounce=debounce_ms, stop_event=stop, watch_filter=_python_files,
        raise_interrupt=False,
    ):
        for outcome in upgrade_changed(target, (path for _, path in changes)):
            report(str(outcome))


def _python_files(change: object, path: str) -> bool:
    return path.endswith(".py") and "__pycache__" not in path
