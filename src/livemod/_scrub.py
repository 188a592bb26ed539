"""Taking back what a module's code left in CPython's own registries, at unload.

Code written without livemod in mind registers things directly: warnings filters, codecs,
loggers and handlers, excepthooks, copyreg reducers, import hooks, ``sys.modules`` entries,
singledispatch implementations, finalizers, gc callbacks, signal handlers, trace hooks,
asyncio policies. After exit and the managed undo, the scrub goes through each of these
registries and removes the unloaded module's own entries -- found *by identity* with
``_owned.Owner`` (never by running module code: no ``==``, no ``isinstance``, no attribute
that a module could have turned into a property). Slots (``sys.excepthook`` and the like)
are put back to what they were before the module loaded, and only if they still hold the
module's value: someone who replaced it since keeps theirs. typing's caches are cleared
whole: CPython offers nothing finer.

Every registry is one small function (in ``_scrub_registries``); a failure in one is logged
and the others still run, and nothing here can make an unload fail. ``Host.scrubber(fn)``
adds third-party registries (an ORM's model registry, a serializer's type table).
"""

from __future__ import annotations

import _signal as _signal_c  # type: ignore[import-not-found]
import asyncio
import builtins
import logging
import operator
import signal
import sys
import threading
import traceback
import warnings
import weakref
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Final, final

from ._owned import Owner, among
from ._owned import mro as _mro

_TYPE_DICT: Final[Any] = type.__dict__["__dict__"]

if TYPE_CHECKING:
    pass

__all__ = ["SIGNALS", "SLOTS", "Scrub", "Scrubber", "ScrubberMixin", "baseline", "getsignal", "run"]

_log = logging.getLogger("livemod")

#: Slots restored to their value before the load, if they still hold the module's value.
#: name -> (read, write, default).
_Slot = tuple[Callable[[], Any], Callable[[Any], None], Callable[[], Any]]


def _set(owner: Any, attr: str) -> Callable[[Any], None]:
    return lambda value: setattr(owner, attr, value)


SLOTS: Final[dict[str, _Slot]] = {
    "sys.excepthook": (lambda: sys.excepthook, _set(sys, "excepthook"),
                       lambda: sys.__excepthook__),
    "threading.excepthook": (lambda: threading.excepthook, _set(threading, "excepthook"),
                             lambda: threading.__excepthook__),
    "sys.unraisablehook": (lambda: sys.unraisablehook, _set(sys, "unraisablehook"),
                           lambda: sys.__unraisablehook__),
    "sys.displayhook": (lambda: sys.displayhook, _set(sys, "displayhook"),
                        lambda: sys.__displayhook__),
    "sys.breakpointhook": (lambda: sys.breakpointhook, _set(sys, "breakpointhook"),
                           lambda: sys.__breakpointhook__),
    "warnings.showwarning": (lambda: warnings.showwarning, _set(warnings, "showwarning"),
                             lambda: getattr(warnings, "_showwarning_orig", None)),
    "warnings.formatwarning": (lambda: warnings.formatwarning, _set(warnings, "formatwarning"),
                               lambda: getattr(warnings, "_formatwarning_orig", None)),
    "asyncio event loop policy": (
        lambda: getattr(asyncio.events, "_event_loop_policy", None),
        lambda value: setattr(asyncio.events, "_event_loop_policy", value),
        lambda: None,
    ),
    "logging logger class": (logging.getLoggerClass, logging.setLoggerClass,
                             lambda: logging.Logger),
    "logging record factory": (logging.getLogRecordFactory, logging.setLogRecordFactory,
                               lambda: logging.LogRecord),
    "threading.settrace hook": (lambda: getattr(threading, "_trace_hook", None),
                                _set(threading, "_trace_hook"), lambda: None),
    "threading.setprofile hook": (lambda: getattr(threading, "_profile_hook", None),
                                  _set(threading, "_profile_hook"), lambda: None),
}


def baseline() -> dict[str, Any]:
    """What the slots hold before a module's body runs (taken at the start of each load).

    Read-only for its users. Between two loads the slots seldom change, so a baseline equal
    (by identity) to the previous one *is* the previous one: a loaded module then costs no
    memory for it, where a copy each was most of a module's footprint. The previous one is
    only weakly referenced here: once no module holds it, it must not keep its objects
    (say, an unloaded module's excepthook) alive.

    Whether anything changed is one compare, in C-level passes, of every value read (slots,
    signal handlers, ``sys.path``, the builtins' names and values) with what the last
    baseline holds: this runs at every load, and nothing is built when nothing changed.
    """
    global _last
    with _last_lock:
        last = _last()
    # Copied in one step first (another thread may bind a builtin meanwhile).
    table = vars(builtins).copy()
    path = tuple(sys.path)
    try:
        slots = [read() for read in _READERS]
        signals = list(map(getsignal, _READABLE))
    except Exception:  # a slot or signal that cannot be read now: the long way
        pass
    else:
        if last is not None and _unchanged(last, [*slots, *signals], path, table):
            return last
    before = _Baseline()
    for name, (read, _write, _default) in SLOTS.items():
        try:
            before[name] = read()
        except Exception:  # a slot missing on this version
            continue
    try:  # one C-level pass over the signals that could be read at import
        before.update(zip(_SIGNAL_KEYS, map(getsignal, _READABLE), strict=True))
    except (ValueError, OSError):
        for signum, key in zip(_READABLE, _SIGNAL_KEYS, strict=True):
            try:
                before[key] = getsignal(signum)
            except (ValueError, OSError):
                continue
    before["sys.path"] = _reuse(last, "sys.path", path, _ids)
    # Ids only: a baseline must not keep alive what a module later removes.
    values = list(map(id, table.values()))
    old = last.get("builtins") if last is not None else None
    if old is not None and list(old.values()) == values and _ids(old) == _ids(table):
        before["builtins"] = old  # str keys kept alive by ``old``, int values: no __eq__
    else:
        before["builtins"] = dict(zip(table, values, strict=True))
    # The same keys and the very same objects: ids compare without running any __eq__,
    # and ``last`` keeps its objects alive, so no id can have been reused.
    if last is not None and _ids(last) == _ids(before) and _ids(last.values()) == _ids(
            before.values()):
        return last
    with _last_lock:
        _last = weakref.ref(before)
    return before


def _unchanged(last: dict[str, Any], read: list[object], path: tuple[str, ...],
               table: dict[str, object]) -> bool:
    """Whether ``last`` was taken from these very values: the slots and signal handlers
    (``read``, in the order ``last`` holds them), ``sys.path`` and the builtins. By
    identity (``operator.is_``: no ``__eq__`` of a module's object runs); ``last`` keeps
    each of these objects alive, so an identical one is the same; a builtin's value by
    id, as ``last`` keeps it."""
    then = list(last.values())
    if len(then) != len(read) + 2:  # a slot missing then: the long way
        return False
    old_path, old_builtins = last["sys.path"], last["builtins"]
    now = [*read, *path, *table]
    was = [*then[:len(read)], *old_path, *old_builtins]
    return (len(now) == len(was) and all(map(operator.is_, now, was))
            and list(old_builtins.values()) == list(map(id, table.values())))


def _ids(items: Iterable[object]) -> list[int]:
    return list(map(id, items))


def _reuse(last: dict[str, Any] | None, key: str, new: Any, ident: Callable[[Any], Any]) -> Any:
    """``last[key]`` if it is equal to ``new`` by ``ident`` (so that ``last`` can be
    reused whole), else ``new``."""
    old = last.get(key) if last is not None else None
    if old is not None and len(old) == len(new) and ident(old) == ident(new):
        return old
    return new


class _Baseline(dict[Any, Any]):
    __slots__ = ("__weakref__",)  # so that the last one can be weakly referenced


def _dead() -> None:
    return None


#: The slots' readers, in order (the stamp's first part).
_READERS: Final = tuple(read for read, _write, _default in SLOTS.values())


_last_lock = threading.Lock()  # protects: _last
_last: Callable[[], _Baseline | None] = _dead


#: Every signal number, and the C-level getsignal (no enum conversion: this runs at every
#: load and unload).
SIGNALS: Final = tuple(sorted(int(s) for s in signal.valid_signals()))
getsignal: Final[Callable[[int], Any]] = getattr(_signal_c, "getsignal", signal.getsignal)


def _readable(signum: int) -> bool:
    try:
        getsignal(signum)
    except (ValueError, OSError):
        return False
    return True


_READABLE: Final = tuple(filter(_readable, SIGNALS))
_SIGNAL_KEYS: Final = tuple(f"signal {signum}" for signum in _READABLE)


@final
class Scrub:
    """What a scrubber (``Host.scrubber``) is given for one unloaded module.

    Attributes:
        name: the module's name.
        version: its version.
        private_name: the name its code ran under (``livemod.mods._h1.<name>``); its
            submodules are below it.
    """

    __slots__ = (
        "_before",
        "_classes",
        "_loops",
        "_owner",
        "_patches",
        "name",
        "namespaces",
        "private_name",
        "removed_entries",
        "version",
        "where",
    )

    def __init__(
        self,
        owner: Owner,
        version: str,
        *,
        before: dict[str, Any] | None = None,
        loops: Iterable[Any] = (),
        where: str = "",
        patches: Any = None,
    ) -> None:
        self._owner = owner
        self._patches = patches  # _patches.Patches of the load, or None
        self._before = before or {}
        self._loops = tuple(loops)
        self._classes: list[type] | None = None
        self.namespaces: list[dict[str, Any]] = []  # the module's own (set by scrub_instance)
        self.name = owner.name
        self.version = version
        self.private_name = owner.private_name
        self.where = where  # the module's folder or file
        self.removed_entries: list[str] = []

    def owns(self, obj: object) -> bool:
        """Whether ``obj`` is the module's: one of its functions, classes, modules, an
        instance of one of its classes, or a bound method or partial of those. Decided
        without running any of the module's code."""
        return self._owner.owns(obj)

    def owns_name(self, module_name: object) -> bool:
        """Whether a module name (``cls.__module__``, a logger name) is the module's."""
        return self._owner.owns_name(module_name)

    def has_classes(self, base: type = object) -> bool:
        """Whether the module's namespaces define a class (derived from ``base``): a cheap
        pre-check for registries keyed by classes."""
        if self._classes is None:
            values = [v for ns in self.namespaces for v in list(ns.values())]
            kinds = list(map(type, values))
            # Whether a value is a class depends on its type only: one look per type.
            metas = {tid for tid, t in dict(zip(map(id, kinds), kinds, strict=True)).items()
                     if among(type, _mro(t))}
            self._classes = [v for v, t in zip(values, kinds, strict=True)
                             if id(t) in metas and self._owner.owns_class(v)] if metas else []
        return any(among(base, _mro(c)) for c in self._classes)

    def removed(self, what: str) -> None:
        """Say what a scrubber took out (it appears in the unload's event)."""
        self.removed_entries.append(what)


Scrubber = Callable[[Scrub], object]


def run(scrub: Scrub, scrubbers: Iterable[tuple[str, Scrubber]]) -> list[str]:
    """Run each scrubber; return the failures (each already logged). Never raises."""
    failures: list[str] = []
    for label, fn in scrubbers:
        try:
            fn(scrub)
        except Exception as exc:
            text = "".join(traceback.format_exception_only(exc)).strip()
            failures.append(f"{label}: {text}")
            _log.error("module %r: scrubbing %s failed; carrying on with the rest:\n%s",
                       scrub.name, label, "".join(traceback.format_exception(exc)))
            del exc
    return failures


class ScrubberMixin:
    """``Host.scrubber`` (a mixin, so the host file stays the place where things join up)."""

    __slots__ = ()
    def scrubber(self, fn: Scrubber) -> Scrubber:
        """Add a scrubber for a registry livemod does not know (usable as a decorator).

        After each unload (after exit, the managed undo and livemod's own scrub of
        CPython's registries) ``fn(scrub)`` is called with a :class:`livemod.Scrub` for
        the module: ``scrub.owns(obj)`` says whether an object is the module's without
        running its code, and ``scrub.removed(what)`` reports what ``fn`` took out. A
        scrubber must not keep what it is given; one that raises is logged and the unload
        completes. Returns ``fn``.
        """
        host: Any = self  # a Host (not imported: the host module imports this one)
        with host._table.lock:
            host._life.teardown.scrubbers.append(fn)
        return fn
