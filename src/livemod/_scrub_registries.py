"""The registries the scrub knows, one small function each (see ``_scrub`` for the why).

Each takes a ``Scrub`` and removes the unloaded module's own entries by identity, never
running its code; ``scrub_instance`` runs them all, then the host's own scrubbers.
"""

from __future__ import annotations

import builtins
import codecs
import copyreg
import functools
import gc
import logging
import operator
import signal
import sys
import threading
import types
import typing
import weakref
from collections.abc import Iterable
from itertools import chain
from typing import TYPE_CHECKING, Any, Final

from . import _sysmodules
from ._nsget import ns_get
from ._owned import Owner, safe_vars
from ._scrub import _READABLE, _SIGNAL_KEYS, SIGNALS, SLOTS, Scrub, Scrubber, getsignal, run
from ._scrub_helpers import _drop_added, _drop_keys, _none_owned_seen, _remove_identity, _unchanged
from ._scrub_logging import _logging
from ._scrub_warnings import _warnings

if TYPE_CHECKING:
    from ._instance import Instance

__all__ = ["BUILTIN", "dispatchers", "registry_of", "scrub_instance"]

_log = logging.getLogger("livemod")
_TYPE_DICT: Final[Any] = type.__dict__["__dict__"]


# -- one function per registry ----------------------------------------------------------


def _codecs(s: Scrub) -> None:
    # The search path cannot be listed, but unregistering a function that is not
    # registered does nothing: try each function of the module's namespaces (covers a
    # search function registered on its behalf by other code).
    for ns in s.namespaces:
        for value in list(ns.values()):
            if type(value) is types.FunctionType and s.owns(value):
                codecs.unregister(value)


def _slots(s: Scrub) -> None:
    names, now = [], []
    for name, (read, _write, _default) in SLOTS.items():
        try:
            now.append(read())
        except Exception:
            continue
        names.append(name)
    if _unchanged(s, names, now):
        return
    for name, (read, write, default) in SLOTS.items():
        try:
            now = read()
        except Exception:
            continue
        if not s.owns(now):
            continue
        before = s._before.get(name, default())
        write(default() if s.owns(before) else before)
        s.removed(name)


def _trace(s: Scrub) -> None:
    if s.owns(sys.gettrace()):
        sys.settrace(None)
        s.removed("sys.settrace hook")
    if s.owns(sys.getprofile()):
        sys.setprofile(None)
        s.removed("sys.setprofile hook")
    monitoring = getattr(sys, "monitoring", None)
    if monitoring is None:
        return
    events = [v for k, v in vars(monitoring.events).items()
              if type(v) is int and v and not v & (v - 1) and not k.startswith("_")]
    for tool in range(6):
        if monitoring.get_tool(tool) is None:
            continue
        kept = removed = False
        for event in events:
            try:
                old = monitoring.register_callback(tool, event, None)
            except ValueError:
                continue
            if old is None:
                continue
            if s.owns(old):
                removed = True
            else:
                monitoring.register_callback(tool, event, old)
                kept = True
        if removed:
            s.removed(f"sys.monitoring callbacks of tool {tool}")
            if not kept:
                monitoring.set_events(tool, 0)
                monitoring.free_tool_id(tool)


def _signal(s: Scrub) -> None:
    try:  # one C-level pass over the signals that could be read at import
        if _unchanged(s, _SIGNAL_KEYS, map(getsignal, _READABLE)):
            return
    except (ValueError, OSError):
        pass
    on_main = threading.current_thread() is threading.main_thread()
    for signum in SIGNALS:
        try:
            handler = getsignal(signum)
        except (ValueError, OSError):
            continue
        if not s.owns(handler):
            continue
        before = s._before.get(f"signal {signum}", signal.SIG_DFL)
        if s.owns(before):
            before = signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL
        if not on_main:
            raise RuntimeError(f"signal {signum} handler is the module's, and cannot be "
                               f"restored off the main thread (unload from the main thread)")
        signal.signal(signum, before)
        s.removed(f"signal {signum} handler")


def _copyreg(s: Scrub) -> None:
    table: dict[Any, Any] = copyreg.dispatch_table
    if _none_owned_seen(s, "copyreg", [*table, *table.values()]):
        return
    for cls in _drop_keys(table, lambda k, v: s.owns(k) or s.owns(v)):
        s.removed(f"copyreg reducer for {s._owner.describe(cls)}")


def _import_system(s: Scrub) -> None:
    before_path = s._before.get("sys.path", ())
    path = list(sys.path)
    path_same = len(path) == len(before_path) and all(map(operator.is_, path, before_path))
    if path_same and _none_owned_seen(s, "import system", [
            *sys.meta_path, *sys.path_hooks, *sys.path_importer_cache.values()]):
        return  # sys.path as before the load, and nothing of the module's in the rest
    for f in _remove_identity(sys.meta_path, s.owns):
        s.removed(f"sys.meta_path finder {s._owner.describe(f)}")
    for h in _remove_identity(sys.path_hooks, s.owns):
        s.removed(f"sys.path_hooks entry {s._owner.describe(h)}")
    before = s._before.get("sys.path", ())
    where = s.where

    def added(entry: Any) -> bool:
        return (type(entry) is str and entry not in before and bool(where)
                and (entry == where or entry.startswith(where + "/")))

    for entry in _remove_identity(sys.path, added):
        s.removed(f"sys.path entry {entry!r}")
        sys.path_importer_cache.pop(entry, None)
    _drop_keys(sys.path_importer_cache, lambda k, v: s.owns(v))
    # sys.modules entries the module inserted are taken out (and reported) by the wiring's
    # unwire (_wire), which knows the names it wired.


def _singledispatch(s: Scrub) -> None:
    # Only classes are looked for: a module that defines none has nothing to take back.
    if not s.has_classes():
        return
    for fn, label in dispatchers():
        _unregister(s, fn, label)


#: module name -> a weak reference to the module last scanned under it, and -> its
#: dispatchers as (weak ref, label). A module is scanned once, when first seen under its
#: name (dispatchers are made at import); an unload then checks every ``sys.modules`` entry
#: against these in a few C-level passes (it ran a Python loop over them: 70-125 us of
#: every unload of a module that defines a class, the common case, with 300-700 modules).
_SCANNED: dict[str, weakref.ref[Any]] = {}
_DISPATCHERS: dict[str, tuple[tuple[Any, str], ...]] = {}
_dispatchers_lock = threading.Lock()


def dispatchers() -> list[tuple[types.FunctionType, str]]:
    """Every ``functools.singledispatch`` function in a module's globals or one level down
    in its classes (``singledispatchmethod`` too)."""
    with _dispatchers_lock:
        snap = _sysmodules.snapshot()
        if not _sysmodules.str_keys(snap):  # another key's hash could run code
            snap = {k: v for k, v in snap.items() if type(k) is str}
        if len(_SCANNED) > 2 * len(snap):  # forget modules long gone
            for gone in [n for n in _SCANNED if n not in snap]:
                del _SCANNED[gone]
                _DISPATCHERS.pop(gone, None)
        for name in _sysmodules.changed_keys(snap, _SCANNED):
            module = snap[name]
            ns = safe_vars(module)
            try:
                _SCANNED[name] = weakref.ref(module)
            except TypeError:
                _SCANNED.pop(name, None)
                _DISPATCHERS.pop(name, None)
                continue
            scanned = tuple((weakref.ref(fn), label) for fn, label in _scan(ns)) \
                if type(ns) is dict else ()
            if scanned:
                _DISPATCHERS[name] = scanned
            else:
                _DISPATCHERS.pop(name, None)
        held = [found for n, found in _DISPATCHERS.items() if n in snap]  # a few
    found: list[tuple[types.FunctionType, str]] = []
    for fn_ref, label in chain.from_iterable(held):
        fn = fn_ref()
        if fn is not None:
            found.append((fn, label))
    return found


def _scan(ns: dict[str, Any]) -> list[tuple[types.FunctionType, str]]:
    function, method, plain_class = types.FunctionType, functools.singledispatchmethod, type
    where = ns_get(ns, "__name__")  # not ns.get: see _nsget
    out: list[tuple[types.FunctionType, str]] = []
    for value in list(ns.values()):
        t = type(value)
        if t is function:
            if "registry" in value.__dict__:
                out.append((value, f"{where}.{value.__qualname__}"))
        elif t is plain_class:
            for attr in list(_TYPE_DICT.__get__(value).values()):
                ta = type(attr)
                if ta is method:
                    fn = attr.dispatcher
                    if type(fn) is function:
                        out.append((fn, f"{where}.{value.__qualname__}"))
                elif ta is function and "registry" in attr.__dict__:
                    out.append((attr, f"{where}.{attr.__qualname__}"))
    return out


def registry_of(fn: types.FunctionType) -> dict[Any, Any] | None:
    """The registry dict of a singledispatch function (its ``registry`` attribute is a
    read-only view; the dict is a cell of its ``dispatch`` closure, on 3.11 to 3.13)."""
    dispatch = ns_get(vars(fn), "dispatch")
    if type(dispatch) is not types.FunctionType or dispatch.__closure__ is None:
        return None
    cells = dict(zip(dispatch.__code__.co_freevars, dispatch.__closure__, strict=False))
    cell = cells.get("registry")
    registry = cell.cell_contents if cell is not None else None
    return registry if type(registry) is dict else None


def _unregister(s: Scrub, fn: types.FunctionType, label: str) -> None:
    registry = registry_of(fn)
    if registry is None:
        return
    gone = _drop_keys(registry, lambda k, v: s.owns(k) or (k is not object and s.owns(v)))
    if gone:
        clear = ns_get(vars(fn), "_clear_cache")
        if clear is not None:
            clear()
        for cls in gone:
            s.removed(f"singledispatch registration of {s._owner.describe(cls)} on {label}")


def _finalizers(s: Scrub) -> None:
    registry: dict[Any, Any] = weakref.finalize._registry  # type: ignore[attr-defined]
    for f, info in list(registry.items()):
        func = getattr(info, "func", None)
        args = getattr(info, "args", ())
        kwargs = getattr(info, "kwargs", None) or {}
        if s.owns(func) or any(s.owns(a) for a in (*args, *kwargs.values())):
            weakref.finalize.detach(f)
            s.removed(f"weakref.finalize callback {s._owner.describe(func)} (detached)")


def _gc_callbacks(s: Scrub) -> None:
    for cb in _remove_identity(gc.callbacks, s.owns):
        s.removed(f"gc callback {s._owner.describe(cb)}")


def _asyncio(s: Scrub) -> None:
    for loop in s._loops:
        if loop is None or s.owns(loop):
            continue
        if s.owns(loop.get_exception_handler()):
            loop.set_exception_handler(None)
            s.removed("asyncio loop exception handler")
        if s.owns(loop.get_task_factory()):
            loop.set_task_factory(None)
            s.removed("asyncio task factory")
    hooks = sys.get_asyncgen_hooks()
    if s.owns(hooks.firstiter) or s.owns(hooks.finalizer):
        sys.set_asyncgen_hooks(
            firstiter=None if s.owns(hooks.firstiter) else hooks.firstiter,
            finalizer=None if s.owns(hooks.finalizer) else hooks.finalizer,
        )
        s.removed("asyncgen hooks")


def _installed_modules(s: Scrub) -> None:
    # typing_extensions replaces typing._check_generic & co. with its own (``_patches``).
    if s._patches is not None:
        for what in s._patches.restore(s.owns):
            s.removed(what)


def _builtins(s: Scrub) -> None:
    for name in _drop_added(s, "builtins", vars(builtins), lambda k: k.startswith("__")):
        s.removed(f"builtins.{name}")


def _typing(s: Scrub) -> None:
    registry = getattr(typing, "_overload_registry", None)
    if registry is not None:
        for name in _drop_keys(registry, lambda k, v: s.owns_name(k)):
            s.removed(f"typing overloads of {s._owner.public(name)}")
    # typing's caches are lru_caches keyed by the types they saw: only a clear of the
    # whole cache frees the module's classes (design.md, "Cleared whole").
    cleanups = getattr(typing, "_cleanups", None)
    for clear in list(cleanups or ()):
        clear()
    # typing._tp_cache, applied by typing_extensions to functions of its own, keeps each
    # one's lru_cache: its cache_clear in _cleanups, and (3.12+) the cache in _caches.
    if type(cleanups) is list and not _none_owned_seen(s, "typing cleanups", list(cleanups)):
        gone = _remove_identity(cleanups, s.owns)
        if gone:
            s.removed(f"typing's caches of {len(gone)} of its functions")
    caches = getattr(typing, "_caches", None)
    if type(caches) is dict and not _none_owned_seen(s, "typing caches", list(caches)):
        _drop_keys(caches, lambda k, v: s.owns(k))


def _threading_atexit(s: Scrub) -> None:
    calls = getattr(threading, "_threading_atexits", None)
    if type(calls) is list:
        for fn in _remove_identity(calls, s.owns):
            s.removed(f"threading._register_atexit callback {s._owner.describe(fn)}")


#: The registries livemod knows, in the order they are scrubbed (slots before the
#: registries whose entries a slot's value may still use).
BUILTIN: Final[tuple[tuple[str, Scrubber], ...]] = (
    ("hooks and slots", _slots),
    ("trace and profile hooks", _trace),
    ("signal handlers", _signal),
    ("warnings", _warnings),
    ("codecs", _codecs),
    ("logging", _logging),
    ("copyreg", _copyreg),
    ("import system", _import_system),
    ("singledispatch registries", _singledispatch),
    ("weakref finalizers", _finalizers),
    ("gc callbacks", _gc_callbacks),
    ("asyncio", _asyncio),
    ("installed modules' attributes", _installed_modules),
    ("builtins", _builtins),
    ("threading atexit", _threading_atexit),
    ("typing", _typing),
)


def scrub_instance(
    inst: Instance,
    modules: Iterable[types.ModuleType],
    extra: Iterable[Scrubber],
    loops: Iterable[Any],
) -> tuple[list[str], list[str]]:
    """Scrub every registry of what ``inst`` left; returns (what was removed, failures).

    Called at unload after exit and the managed undo, while the module's namespaces are
    still alive (their ids identify its functions). Never raises.
    """
    try:
        namespaces = [ns for ns in (safe_vars(m) for m in modules) if type(ns) is dict]
        owner = Owner(inst.name, inst.private_name, map(id, namespaces), inst.files)
        scrub = Scrub(owner, inst.info.version, before=inst.scrub_before, loops=loops,
                      where=inst.info.path, patches=inst.patches)
        scrub.namespaces = namespaces
        named = [(f"scrubber {getattr(fn, '__qualname__', fn)!r}", fn) for fn in extra]
        failures = run(scrub, (*BUILTIN, *named))
        return scrub.removed_entries, failures
    except Exception as exc:  # never let a scrub stop an unload
        _log.exception("module %r: the scrub failed", inst.name)
        return [], [f"scrub: {exc!r}"]

