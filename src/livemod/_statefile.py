"""State that survives a restart: the loaded modules and their params, in a JSON file.

``StateFile.attach(host)`` rewrites the file after every load, unload and param change;
``StateFile.restore(host)`` loads what it lists into a fresh host. The file looks like::

    {"format": "livemod-state", "version": 1, "host": "web-1", "written_at": 1712345678.9,
     "modules": [{"name": "log", "path": "/srv/modules/log.py", "params": {"level": "info"},
                  "uses": []},
                 {"name": "greet", "path": "/srv/modules/greet.py",
                  "params": {"greeting": "hi", "names": ["a", "b"]}, "uses": ["log"]}]}

Crash safety. Every write goes to a new temp file in the same folder (``.<name>.<random>.tmp``,
mode 0600: params may be secrets), which is flushed and fsync'ed, then renamed over the
file with ``os.replace`` (atomic on POSIX), and the folder is fsync'ed so the rename itself is
durable. A process killed at any instant therefore leaves either the old file or the new one,
never a mix; at worst a stray temp file, which the next ``attach`` or ``restore`` removes.

Decisions (the host relies on them):

- Only LIVE modules are recorded, in load order, with every param's current value (defaults
  included: a module whose default later changes keeps the value it ran with). Whether a module
  was loaded only as a dependency (for ``modprobe -r``) is not recorded: restored modules are
  all explicit.
- Load, unload and param events always write; any other event (a taint, a refusal, a kind
  added later such as an upgrade) writes only if the modules or params changed.
- The restore order is the recorded one, checked against the recorded ``uses`` and the
  manifests' ``depends`` and reordered (dependencies first) if a file says otherwise.
- Unloads done by ``host.close()`` are not recorded, so a clean shutdown keeps the set and the
  next start restores it; to forget a module, ``rmmod`` it before closing.
- ``attach`` does not write at once (attaching to an empty host must not wipe the saved set
  before ``restore`` reads it); ``restore`` defers writes while it loads (a crash half-way
  through keeps the full set) and writes once at the end, so afterwards the file lists what
  really loaded. Modules that failed are then dropped from the file and listed in the report,
  with their path and params, for the operator to retry.
- A missing file restores nothing and is not an error. An unreadable one (bad JSON, wrong
  shape, a format from a newer livemod) is moved aside to ``<name>.corrupt`` (replacing an
  older one), a warning is logged, the report says where and why, and the host starts with
  what it has: refusing to start would turn one bad file into an outage. Since our own
  writes are atomic, such a file came from elsewhere (an editor, a disk fault).
- Failures are reported as text and error code, never as exception objects: a traceback
  would keep the failed module's frames, and so its code, alive (the leak check would blame
  it).
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol, final

from livemod import _deps
from livemod._state import State

if TYPE_CHECKING:
    from livemod._instance import Module, ModuleStatus
    from livemod._metadata import ModuleInfo
    from livemod._records import Event


class Host(Protocol):
    """What the state file needs of a ``livemod.Host``. A protocol, not the class: the host
    builds a state file (``Host.from_config``), so this file must not import the host."""

    name: str

    @property
    def closed(self) -> bool: ...
    def on_event(self, listener: Callable[[Event], object]) -> Callable[[], None]: ...
    def lsmod(self) -> list[ModuleStatus]: ...
    def insmod(self, path: str, **params: object) -> Module: ...
    def modinfo(self, path_or_name: str) -> ModuleInfo: ...

__all__ = ["FORMAT_VERSION", "RestoreFailure", "RestoreReport", "SavedModule", "StateFile"]

_log = logging.getLogger("livemod")

FORMAT: Final = "livemod-state"
#: Bumped on an incompatible change; a file with a higher version is not guessed at.
FORMAT_VERSION: Final = 1
#: The events after which the set of modules or their params may have changed.
_CHANGES: Final = frozenset({"load", "unload", "param"})


@final
@dataclass(frozen=True, slots=True)
class SavedModule:
    """One module as recorded in the state file."""

    name: str
    path: str
    params: Mapping[str, object]
    uses: tuple[str, ...] = ()


@final
@dataclass(frozen=True, slots=True)
class RestoreFailure:
    """A module that the state file lists but that did not load again."""

    name: str
    path: str
    params: Mapping[str, object]
    error: str  # the message of the error insmod raised
    code: str  # its LivemodError code ("init-error", ...), or the exception's class name


@final
@dataclass(frozen=True, slots=True)
class RestoreReport:
    """What :meth:`StateFile.restore` did.

    ``loaded`` and ``skipped`` (already loaded in the host) are names in the order tried.
    ``corrupt`` is where an unreadable state file was moved, with ``problem`` saying why.
    """

    path: str
    found: bool
    host_name: str | None = None
    loaded: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()
    failed: tuple[RestoreFailure, ...] = ()
    corrupt: str | None = None
    problem: str | None = None

    @property
    def ok(self) -> bool:
        """True when every recorded module is loaded and the file was readable."""
        return not self.failed and self.corrupt is None


class _Unreadable(Exception):
    """The state file exists but is not one we can trust; the message says why."""


@final
class StateFile:
    """The state file at ``path`` (created, with its folder, on the first write)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.path.abspath(os.fspath(path))
        # Protects: the snapshot-then-write sequence (so the last write is of the newest
        # snapshot), ``_deferring`` and ``_last``. Never held while a module loads.
        self._lock = threading.Lock()
        self._deferring = 0
        self._last: list[dict[str, Any]] | None = None  # the modules written last

    def __repr__(self) -> str:
        return f"<livemod StateFile {self.path}>"

    # ---------------------------------------------------------------- public

    def attach(self, host: Host) -> Callable[[], None]:
        """Rewrite the file after every load, unload and param change of ``host`` (and
        after any other event of its log that comes with a change of modules or params).

        Does not write at once (see the module docstring). A write that fails (disk full,
        permissions) is logged and the host carries on; the next change tries again.

        Returns:
            A function that detaches (idempotent).
        """
        self._sweep()

        def listener(event: Event) -> None:
            # Unloads by close() are a shutdown, not the operator's choice: keep the set.
            if host.closed:
                return
            # Any kind of event may come with a change (a future "replace" included); the
            # snapshot comparison keeps taints and refusals from costing a write.
            self._save_quietly(host, only_if_changed=event.kind not in _CHANGES)

        return host.on_event(listener)

    def restore(self, host: Host) -> RestoreReport:
        """Load the recorded modules into ``host`` with their params, dependencies first.

        A module that fails is reported and the rest still load (its dependents then fail
        too, each with its own error). A module already loaded in ``host`` is skipped.

        Returns:
            What was loaded, skipped and failed; see :class:`RestoreReport`.
        """
        self._sweep()
        try:
            host_name, saved = self.read()
        except FileNotFoundError:
            return RestoreReport(self.path, found=False)
        except _Unreadable as exc:
            backup = self._quarantine()
            _log.warning("%s; moved it to %s and starting without it", exc, backup)
            self._save_quietly(host)
            return RestoreReport(self.path, found=True, corrupt=backup, problem=str(exc))
        present = {row.name for row in host.lsmod()}
        loaded: list[str] = []
        skipped: list[str] = []
        failed: list[RestoreFailure] = []
        with self._deferred():
            for entry in _dependency_order(saved, host):
                if entry.name in present:
                    skipped.append(entry.name)
                    continue
                try:
                    host.insmod(entry.path, **entry.params)
                except Exception as exc:
                    failed.append(RestoreFailure(
                        entry.name, entry.path, entry.params, _message(exc),
                        str(getattr(exc, "code", type(exc).__name__))))
                    del exc  # its traceback holds the failed module's frames
                    continue
                loaded.append(entry.name)
        self._save_quietly(host)
        return RestoreReport(self.path, found=True, host_name=host_name, loaded=tuple(loaded),
                             skipped=tuple(skipped), failed=tuple(failed))

    def read(self) -> tuple[str | None, list[SavedModule]]:
        """The host name and modules recorded in the file, in the recorded order.

        Raises:
            FileNotFoundError: there is no state file.
        """
        try:
            with open(self.path, "rb") as f:
                data = json.loads(f.read().decode("utf-8"))
        except FileNotFoundError:
            raise
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise self._bad(f"not readable JSON ({exc})") from None
        return self._parse(data)

    def save(self, host: Host, *, only_if_changed: bool = False) -> None:
        """Write the LIVE modules of ``host`` now (atomically; see the module docstring).

        With ``only_if_changed``, skip the write if the modules and params are the ones
        this object wrote last.

        Raises:
            OSError: the file could not be written; the old one is untouched.
        """
        with self._lock:
            if self._deferring:
                return
            modules = [{"name": r.name, "path": r.path, "params": dict(r.params),
                        "uses": list(r.uses)}
                       for r in host.lsmod() if r.state is State.LIVE]
            if only_if_changed and modules == self._last:
                return
            document = {"format": FORMAT, "version": FORMAT_VERSION, "host": host.name,
                        "written_at": time.time(), "modules": modules}
            # Tuples (list params) are written as JSON arrays; insmod turns them back.
            self._write_atomically(json.dumps(document, indent=1).encode("utf-8") + b"\n")
            self._last = modules

    # ---------------------------------------------------------------- writing

    def _save_quietly(self, host: Host, *, only_if_changed: bool = False) -> None:
        try:
            self.save(host, only_if_changed=only_if_changed)
        except (OSError, TypeError, ValueError) as exc:
            _log.error("cannot write the state file %s: %s (the host carries on, but a "
                       "restart will not see this change; check the disk and permissions)",
                       self.path, exc)

    def _write_atomically(self, payload: bytes) -> None:
        folder, base = os.path.split(self.path)
        os.makedirs(folder, mode=0o700, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=".tmp", dir=folder)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(payload)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        _fsync_folder(folder)

    def _quarantine(self) -> str:
        backup = self.path + ".corrupt"
        try:
            os.replace(self.path, backup)
        except OSError as exc:
            # Left in place, it is overwritten by the next write; say so rather than fail.
            _log.error("cannot move the unusable state file %s aside: %s", self.path, exc)
            return self.path
        _fsync_folder(os.path.dirname(self.path))
        return backup

    def _sweep(self) -> None:
        # Temp files of a writer that was killed mid-write; never a complete state file.
        folder, base = os.path.split(self.path)
        for stale in glob.glob(os.path.join(glob.escape(folder), f".{glob.escape(base)}.*.tmp")):
            with contextlib.suppress(OSError):
                os.unlink(stale)

    @contextlib.contextmanager
    def _deferred(self) -> Iterator[None]:
        with self._lock:
            self._deferring += 1
        try:
            yield
        finally:
            with self._lock:
                self._deferring -= 1

    # ---------------------------------------------------------------- reading

    def _bad(self, why: str) -> _Unreadable:
        return _Unreadable(
            f"state file {self.path} is unusable: {why} (fix or delete it; livemod moves it "
            f"to {os.path.basename(self.path)}.corrupt and starts without it)"
        )

    def _parse(self, data: Any) -> tuple[str | None, list[SavedModule]]:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise self._bad(f"not a livemod state file (no \"format\": \"{FORMAT}\")")
        version = data.get("version")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise self._bad(f"bad format version {version!r}")
        if version > FORMAT_VERSION:
            raise self._bad(f"written by a newer livemod (format {version}; this one reads "
                            f"up to {FORMAT_VERSION})")
        host_name = data.get("host")
        modules = data.get("modules")
        if not isinstance(modules, list) or not isinstance(host_name, str | None):
            raise self._bad("\"modules\" must be a list and \"host\" a string")
        entries = [self._entry(i, item) for i, item in enumerate(modules)]
        names = [e.name for e in entries]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise self._bad(f"module {twice[0]!r} is listed twice")
        return host_name, entries

    def _entry(self, index: int, item: Any) -> SavedModule:
        ok = (isinstance(item, dict) and isinstance(item.get("name"), str)
              and isinstance(item.get("path"), str) and isinstance(item.get("params"), dict)
              and isinstance(item.get("uses", []), list)
              and all(isinstance(u, str) for u in item.get("uses", [])))
        if not ok:
            raise self._bad(f"modules[{index}] must have a name and path (strings), params "
                            f"(an object) and uses (a list of names)")
        return SavedModule(item["name"], item["path"], item["params"], tuple(item.get("uses", ())))


def _dependency_order(saved: list[SavedModule], host: Host) -> list[SavedModule]:
    """``saved`` reordered, if needed, so every module comes after what it depends on.

    The recorded order is the load order, which already is one; this guards against a file
    written by hand or by a host whose table order changed (a hot upgrade). Edges are the
    recorded ``uses`` plus the ``depends`` of each manifest as it is now on disk.
    """
    by_word: dict[str, str] = {}
    depends: dict[str, set[str]] = {}
    for entry in saved:
        by_word[entry.name] = entry.name
        depends[entry.name] = set(entry.uses)
        try:
            info = host.modinfo(entry.path)
        except Exception:  # its load will fail and say why; order it by what we know
            continue
        by_word.update({alias: entry.name for alias in info.aliases if alias not in by_word})
        depends[entry.name].update(req.name for req in info.depends)
    used_by: dict[str, list[str]] = {entry.name: [] for entry in saved}
    for user, needs in depends.items():
        for word in sorted(needs):
            dep = by_word.get(word)
            if dep is not None and dep != user:
                used_by[dep].append(user)
    # dependents_order puts users first; reversed, dependencies come first. Feeding it the
    # reversed record keeps the recorded order wherever no edge forces a change.
    names = _deps.dependents_order([e.name for e in reversed(saved)], used_by)
    index = {entry.name: entry for entry in saved}
    return [index[name] for name in reversed(names)]


def _message(exc: BaseException) -> str:
    return "".join(traceback.format_exception_only(exc)).strip().replace("\n", " ")


def _fsync_folder(folder: str) -> None:
    # Makes the rename durable; not every platform can open a folder (Windows cannot).
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
    try:
        fd = os.open(folder, flags)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)

