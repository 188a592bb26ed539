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

from .errors import LivemodError, missing_extra

if TYPE_CHECKING:
    from livemod import Host

__all__ = ["HostTarget", "Target", "UpgradeOutcome", "UpgradeResult", "owners",
           "upgrade_changed", "watch"]


class Target(Protocol):
    """What watch mode drives: a host, in process or over a socket."""

    def modules(self) -> list[tuple[str, str, str]]:
        """``(name, version, path)`` of each LIVE module."""
        ...

    def upgrade(self, name: str) -> UpgradeResult:
        """Upgrade ``name`` from its own path (refusing a downgrade unless the target was
        told to allow them); return the new version and what is still draining."""
        ...


@final
@dataclass(frozen=True, slots=True)
class UpgradeResult:
    """What one upgrade did: the new version, and the old one's users that keep it GOING
    ("removal pending") if it could not drain in time."""

    version: str
    removal_pending: tuple[str, ...] = ()


@final
class HostTarget:
    """A ``livemod.Host`` in this process."""

    def __init__(self, host: Host, *, downgrade: bool = False) -> None:
        self._host = host
        self._downgrade = downgrade

    def modules(self) -> list[tuple[str, str, str]]:
        return [(s.name, s.version, s.path) for s in self._host.lsmod() if s.state.name == "LIVE"]

    def upgrade(self, name: str) -> UpgradeResult:
        module = self._host.replace(name, cascade=True, downgrade=self._downgrade)
        return UpgradeResult(module.version, tuple(module.removal_pending))


@final
@dataclass(frozen=True, slots=True)
class UpgradeOutcome:
    """One module's upgrade after a change: done (``error`` empty) or refused."""

    name: str
    old_version: str
    new_version: str
    seconds: float
    error: str
    #: What still uses the old version, which stays GOING until they are done.
    removal_pending: tuple[str, ...] = ()

    def __str__(self) -> str:
        if self.error:
            return f"x {self.name}: kept {self.old_version} running: {self.error}"
        pending = (f"; {self.old_version} still in use ({'; '.join(self.removal_pending)}): "
                   f"removal pending (see lsmod)" if self.removal_pending else "")
        return (f"upgraded {self.name} {self.old_version} -> {self.new_version} "
                f"in {self.seconds * 1000:.1f} ms{pending}")

    def as_dict(self) -> dict[str, object]:
        """The outcome as plain JSON (``livemod watch --json``)."""
        return {"name": self.name, "old_version": self.old_version,
                "new_version": self.new_version, "seconds": round(self.seconds, 4),
                "ok": not self.error, "error": self.error,
                "removal_pending": list(self.removal_pending)}


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
            result = target.upgrade(name)
            error = ""
        except LivemodError as exc:
            result, error = UpgradeResult(versions[name]), str(exc)
        outcomes.append(UpgradeOutcome(name, versions[name], result.version,
                                       time.perf_counter() - started, error,
                                       result.removal_pending))
    return outcomes


def watch(
    target: Target,
    folders: Sequence[str],
    *,
    report: Callable[[str], object] = print,
    on_outcome: Callable[[UpgradeOutcome], object] | None = None,
    stop: threading.Event | None = None,
    debounce_ms: int = 200,
) -> None:
    """Upgrade modules on every saved change under ``folders`` until ``stop`` is set.

    ``report`` is given the "watching ..." line first, then one line per upgrade;
    ``on_outcome`` (if given) each :class:`UpgradeOutcome` as a record.

    Raises:
        NotInstalled: the ``watchfiles`` package is not installed (pip install livemod[watch]).
    """
    try:
        import watchfiles
    except ImportError:
        raise missing_extra("livemod watch", "watchfiles", "watch") from None
    report(f"watching {', '.join(folders)} (Ctrl-C to stop)")
    for changes in watchfiles.watch(
        *folders, debounce=debounce_ms, stop_event=stop, watch_filter=_python_files,
        raise_interrupt=False,
    ):
        for outcome in upgrade_changed(target, (path for _, path in changes)):
            report(str(outcome))
            if on_outcome is not None:
                on_outcome(outcome)


def _python_files(change: object, path: str) -> bool:
    return path.endswith(".py") and "__pycache__" not in path
