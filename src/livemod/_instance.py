"""The record of one loaded module instance, and the public views of it.

An ``Instance`` is private: the host's module table holds it, and it owns everything the
module took (the managed undo stack, staged registrations, holds, pins). Users see it through
``Module`` (a handle returned by ``insmod``) and ``ModuleStatus`` (a frozen row of ``lsmod``).
At GONE the instance drops every reference to the module's code, so a handle kept by the
user never keeps an unloaded module alive.
"""

from __future__ import annotations

import inspect
import itertools
import logging
import queue
import threading
import time
import traceback
import types
from collections.abc import Callable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any, Final, Literal, Protocol, final

from ._hooks import Impl
from ._metadata import ModuleInfo
from ._params import Params
from ._state import State

__all__ = ["Instance", "Module", "ModuleIdentity", "ModuleStatus", "Undo", "UndoStep",
           "frozen_mapping"]

_log = logging.getLogger("livemod")
_ids = itertools.count(1)
_stopping_lock = threading.Lock()  # protects: the creation of each Instance._stopping
# The two locks below are shared by every module, so they are reentrant: an allocation made
# while one is held can run a finalizer (garbage collection) that reaches another module's
# record on the same thread -- with a lock per module, only its own.
# protects: the creation of an Instance's containers made on first write (own_set, ...)
_made_lock = threading.RLock()
_undo_lock = threading.RLock()  # protects: every Undo's _entries
#: The shared empties an Instance's containers start as (immutable: a write makes its own).
_NO_SET: Final[frozenset[Any]] = frozenset()
_NO_MAP: Final[Mapping[str, object]] = types.MappingProxyType({})
SetField = Literal["bound", "mixed_copies", "tasks", "uses"]
ListField = Literal["atexit_undo", "direct_atexit", "native", "param_callbacks", "staged",
                    "staged_starts", "threads"]


@final
class Undo:
    """The managed undo stack: each resource pushes its undo the moment it is taken.

    Unwound last-in-first-out; a failing undo is logged and the rest still run (svcs does
    the same). An entry is ``(what, undo)``, or an :class:`UndoStep` that is both (one small
    object per hook registration or export, where a closure, its cells, the description
    and the pair cost ~500 bytes). One lock for every stack (``_undo_lock``, ~90 bytes a
    module otherwise) protects: 1) ``_entries``. Undos run outside it.
    """

    __slots__ = ("_entries", "_module")

    def __init__(self, module: str) -> None:
        self._module = module
        self._entries: dict[int, tuple[str, Callable[[], object]] | UndoStep] = {}

    def push(self, what: str, undo: Callable[[], object]) -> int:
        token = next(_ids)
        with _undo_lock:
            self._entries[token] = (what, undo)
        return token

    def push_step(self, step: UndoStep) -> int:
        """Push ``step``, described by ``step.describe()`` when that is needed."""
        token = next(_ids)
        with _undo_lock:
            self._entries[token] = step
        return token

    def discard(self, token: int) -> object | None:
        """Take the entry of ``token`` off without running it; None if it is gone."""
        with _undo_lock:
            return self._entries.pop(token, None)

    def unwind(self, run: Callable[[Any, str], object] | None = None) -> list[str]:
        """Run every undo, newest first; return a description of each one that failed.

        An undo that returns an awaitable (``__aexit__`` of an async context manager) is
        handed to ``run`` to be completed on the host's event loop.
        """
        failures: list[str] = []
        while True:
            with _undo_lock:
                try:
                    _, entry = self._entries.popitem()  # the newest (dicts keep order)
                except KeyError:
                    return failures
            # A step is described only if that is needed (a failure, an async cleanup).
            what, undo = entry if isinstance(entry, tuple) else ("", entry)
            try:
                result = undo()
                if inspect.isawaitable(result):
                    if run is None:
                        raise TypeError("an async cleanup needs the host's event loop")
                    run(result, what or _describe(undo))
            except Exception as exc:
                what = what or _describe(undo)
                text = "".join(traceback.format_exception_only(exc)).strip()
                failures.append(f"{what}: {text}")
                # Formatted text only: a kept traceback would keep the module's frames alive.
                _log.error(
                    "module %r: undoing %s failed; carrying on with the rest:\n%s",
                    self._module, what, "".join(traceback.format_exception(exc)),
                )
                del exc

    def __len__(self) -> int:
        return len(self._entries)


class UndoStep(Protocol):
    """An undo that describes itself (only when a failure is reported)."""

    def __call__(self) -> object: ...

    def describe(self) -> str: ...


def _describe(step: object) -> str:
    describe = getattr(step, "describe", None)
    return str(describe()) if describe is not None else repr(step)


@final
class Instance:
    """One loaded instance of a module (two may coexist briefly during an upgrade).

    Fields that change after load are guarded by the host's ``_lock``: ``state``, ``holds``,
    ``uses``, ``exports``, ``staged``. ``pins`` is a dict written by weakref callbacks that
    may run inside garbage collection on any thread, so it is only ever touched with single
    dict operations (atomic) and never under a lock.
    """

    # Slots: a module's record has more fields than CPython shares a dict's keys for (30),
    # so each instance had a dict of its own, ~2 KiB of a loaded module's footprint.
    # ``state`` alone lives in the ``__dict__`` (made at the first move): a slot cannot have
    # the class default below, and only the journal may assign it.
    __slots__ = ("__dict__", "__weakref__", "_stopping", "_wakeups", "auto", "bound", "context",
                 "direct_atexit", "errors", "exports", "files", "holds", "id", "info",
                 "init_ok", "loaded_at", "mixed_copies", "module", "name", "namespace_ids",
                 "native", "param_callbacks", "params", "pins", "private_name", "replaced",
                 "scrub_before", "staged", "staged_exports", "staged_starts", "state_since",
                 "tasks", "threads", "undo", "untrusted", "uses", "wiring")

    #: Written only by the journal (``_journal.Journal.move_unlocked``); born LOADING.
    state: State = State.LOADING

    def __init__(self, info: ModuleInfo, params: Params) -> None:
        self.id = next(_ids)
        self.info = info
        self.name = info.name
        self.params = params
        self.private_name = ""
        self.wiring: Any = None  # _wiring.Wiring: what its imports resolve to
        # The containers below start as one shared empty (frozen) value and are made on
        # first write (``own_set``, ``own_list``, ``own_staged_exports``): most modules
        # write few of them, and ten empty sets and lists were ~1.5 KiB a module.
        self.mixed_copies: AbstractSet[str] = _NO_SET  # public names an unwired import mixed in
        self.module: types.ModuleType | None = None
        self.namespace_ids: frozenset[int] = frozenset()
        self.files: frozenset[str] = frozenset()  # absolute paths of its .py files
        # The module's ModuleContext (a ModuleIdentity), typed by its base class here so
        # that this record does not depend on the context.
        self.context: ModuleIdentity | None = None
        self.undo = Undo(info.name)
        self.staged: Sequence[tuple[str, Impl]] = ()
        self.staged_exports: Mapping[str, object] = _NO_MAP
        self.staged_starts: Sequence[Callable[[], None]] = ()
        self.exports: Mapping[str, object] = _NO_MAP
        self.holds: dict[int, str] = {}
        self.pins: dict[int, str] = {}
        self.uses: AbstractSet[str] = _NO_SET
        self.bound: AbstractSet[str] = _NO_SET  # modules whose objects this one imported directly
        self.threads: Sequence[threading.Thread] = ()  # managed threads started so far
        self.tasks: AbstractSet[object] = _NO_SET
        self.param_callbacks: Sequence[Callable[[str, object], object]] = ()
        self.auto = False  # loaded by modprobe only as a dependency
        self.replaced: Sequence[Instance] = ()  # the versions an upgrade replaced with this one
        self.untrusted: str | None = None  # why its signature did not check (policy warn)
        self.direct_atexit: Sequence[tuple[str, str]] = ()  # (qualname, where): strings only
        # (trampoline, lease, undo) of each atexit registration its code made directly, for
        # its own atexit.unregister (the trampolines hold nothing of it once taken back).
        self.atexit_undo: Sequence[tuple[Any, object, Callable[[], None]]] = ()
        self.scrub_before: dict[str, object] = {}  # registry slots before its body ran
        self.patches: Any = None  # _patches.Patches: what it replaced in installed modules
        self.native: Sequence[str] = ()  # private names of its extension modules, once loaded
        self._stopping: threading.Event | None = None  # made on first use: see stopping
        self._wakeups: queue.SimpleQueue[None] | None = None  # made on first use: wakeups
        self.init_ok = False
        self.errors = 0
        self.loaded_at = time.time()
        self.state_since = time.monotonic()

    @property
    def stopping(self) -> threading.Event:
        """Set when the module starts to unload (its managed threads wait on it).

        Made on first use: an Event is a Condition, a lock and a deque, about 2.7 KiB,
        and most modules never start a thread.
        """
        event = self._stopping
        if event is None:
            with _stopping_lock:
                event = self._stopping
                if event is None:
                    event = self._stopping = threading.Event()
        return event

    @property
    def wakeups(self) -> queue.SimpleQueue[None]:
        """Woken by the last hold or pin released (SimpleQueue.put is safe inside gc
        callbacks, which is where a pin's release may run: they get ``wakeups.put`` when
        the hold or pin is taken, never the property). Made on first use (~160 bytes)."""
        found = self._wakeups
        if found is None:
            with _made_lock:
                made: queue.SimpleQueue[None] = queue.SimpleQueue()
                found = self._wakeups
                if found is None:
                    found = self._wakeups = made
        return found

    def own_set(self, field: SetField) -> set[Any]:
        """The record's own set for ``field``, made on first write (shared empty before)."""
        found: set[Any] = self._own(field, set)
        return found

    def own_list(self, field: ListField) -> list[Any]:
        """The record's own list for ``field``, made on first write (shared empty before)."""
        found: list[Any] = self._own(field, list)
        return found

    def _own(self, field: str, kind: type[set[Any]] | type[list[Any]]) -> Any:
        found = getattr(self, field)
        if type(found) is not kind:
            with _made_lock:
                made = kind(getattr(self, field))
                found = getattr(self, field)  # (a finalizer run by kind() may have made it)
                if type(found) is not kind:
                    setattr(self, field, made)
                    found = made
        return found

    def own_staged_exports(self) -> dict[str, object]:
        """The record's own dict of staged exports, made on first write."""
        found = self.staged_exports
        if type(found) is not dict:
            with _made_lock:
                made = dict(self.staged_exports)
                found = self.staged_exports
                if type(found) is not dict:
                    found = self.staged_exports = made
        return found

    def staged_done(self) -> Sequence[Callable[[], None]]:
        """Published: forget what was staged; return the staged starts, for the caller."""
        starts = self.staged_starts
        self.staged, self.staged_exports, self.staged_starts = (), _NO_MAP, ()
        return starts

    def own_thread_idents(self) -> set[int]:
        """Idents of the module's managed threads that are running now (idents of ended
        threads are reused by the OS, so they are never kept)."""
        return {t.ident for t in list(self.threads) if t.ident is not None and t.is_alive()}

    def holders(self) -> list[str]:
        return [*self.holds.values(), *self.pins.values()]

    def release_code(self) -> None:
        """Drop every reference to the module's code (at GONE)."""
        self.module = None
        self.context = None
        self.staged = ()
        self.staged_exports = _NO_MAP
        self.staged_starts = ()
        self.exports = _NO_MAP
        self.tasks = _NO_SET
        self.param_callbacks = ()
        self.replaced = ()


@final
@dataclass(frozen=True, slots=True)
class ModuleStatus:
    """One row of ``host.lsmod()``: a frozen record, safe to keep."""

    name: str
    version: str
    state: State
    holds: int
    pins: int
    used_by: tuple[str, ...]
    uses: tuple[str, ...]
    path: str
    params: Mapping[str, object]
    errors: int
    since: float
    #: Taint flags this module caused (permanent, like the kernel's per-module flags).
    taints: tuple[str, ...] = ()
    #: Its extension modules loaded so far (``pkg._speedups``): native code, whose library
    #: stays mapped for the life of the process after the module unloads.
    native: tuple[str, ...] = ()
    #: Bytes of memory the module's own objects hold, measured when lsmod was called (see
    #: ``livemod._size``): ``lsmod``'s Size column.
    size: int = 0


class ModuleIdentity:
    """Who a module is, read through its instance (shared by Module and ModuleContext)."""

    __slots__ = ()
    _inst: Instance

    @property
    def name(self) -> str:
        return self._inst.name

    @property
    def version(self) -> str:
        return self._inst.info.version

    @property
    def path(self) -> str:
        return self._inst.info.path

    @property
    def state(self) -> State:
        return self._inst.state

    @property
    def params(self) -> Params:
        return self._inst.params


@final
class Module(ModuleIdentity):
    """A handle to a loaded module, as returned by ``insmod`` and ``modprobe``.

    It stays valid after unload (``state`` is then GONE and ``exports`` empty) and never
    keeps the module's code alive.
    """

    __slots__ = ("_inst",)

    def __init__(self, inst: Instance) -> None:
        self._inst = inst

    @property
    def info(self) -> ModuleInfo:
        return self._inst.info

    @property
    def removal_pending(self) -> tuple[str, ...]:
        """Versions this one replaced that are still draining (GOING, "removal pending")."""
        return tuple(old.info.version for old in self._inst.replaced
                     if old.state is State.GOING)

    @property
    def exports(self) -> Mapping[str, Any]:
        """What the module exported with ``mod.export``, once LIVE (empty before and after)."""
        return self._inst.exports

    def __getattr__(self, name: str) -> Any:
        try:
            return self._inst.exports[name]
        except KeyError:
            raise AttributeError(
                f"module {self.name!r} exports no {name!r} "
                f"(it exports: {', '.join(sorted(self._inst.exports)) or 'nothing'})"
            ) from None

    def __repr__(self) -> str:
        return f"<livemod.Module {self.name!r} {self.version} {self.state.name}>"


def frozen_mapping(d: Mapping[str, object]) -> Mapping[str, object]:
    return types.MappingProxyType(dict(d)) if d else _NO_MAP
