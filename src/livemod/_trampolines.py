"""Registrations made by module code directly, taken back at unload.

Some process registries cannot be undone entry by entry: ``sys.addaudithook``,
``os.register_at_fork`` and ``codecs.register_error`` have no removal at all, and ``atexit``
can neither be listed nor seen by the garbage collector. So livemod interposes these APIs
once per process (the first Host does it). A call whose caller frame is module code (see
``_provenance``: one lookup on the frame's builtins) is attributed to that module:

- the module's function is registered behind a *trampoline*, a small livemod object that
  forwards to it; at unload the trampoline lets go of the function (and its arguments) and
  from then on does nothing -- or, for an error handler, hands over to the handler that was
  registered under that name before, or behaves like ``strict``;
- ``atexit`` gets a trampoline too, and it is unregistered at unload;
- ``codecs.register`` is passed through and ``codecs.unregister``-ed at unload;
- ``Logger.addHandler`` and ``addFilter`` are passed through, and the handler or filter is
  taken off that logger at unload (a stdlib ``NullHandler`` on a public logger cannot be
  told to be the module's by its type).

The undo is pushed on the module's managed undo stack, so it runs at unload and on a failed
load alike, in order with everything else. Calls from anywhere else go straight to the real
API, unchanged. What cannot be reached this way (a registration made on the module's behalf
by installed code, or with a reference to the real function taken before livemod started)
is named by the leak report.
"""

from __future__ import annotations

import atexit
import codecs
import logging
import os
import sys
import threading
import types
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, final

from . import _atexit_slots, _provenance
from ._nsget import ns_get
from ._owned import class_qualname

if TYPE_CHECKING:
    from ._instance import Instance

__all__ = ["Trampoline", "install", "installed", "register_atexit", "unregister_atexit"]

_lock = threading.Lock()
#: name -> the real function, once installed.
_REAL: dict[str, Callable[..., Any]] = {}


@final
class Trampoline:
    """Forwards to a module's function until the module is unloaded; then ``fallback``."""

    __slots__ = ("args", "fallback", "fn", "kwargs", "lease", "module", "what")

    def __init__(
        self,
        module: str,
        what: str,
        fn: Callable[..., Any],
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        fallback: Callable[..., Any] | None = None,
    ) -> None:
        self.module = module
        self.what = what
        self.fn: Callable[..., Any] | None = fn
        self.args = args
        self.kwargs = kwargs or {}
        self.fallback = fallback
        self.lease: object | None = None  # whose registration it is now (atexit slots)

    def __call__(self, *a: Any, **k: Any) -> Any:
        fn = self.fn  # one read: a concurrent unload may clear it
        if fn is not None:
            return fn(*self.args, *a, **self.kwargs, **k)
        if self.fallback is not None:
            return self.fallback(*a, **k)
        return None

    def detach(self) -> None:
        """Let go of the module's function and arguments (at unload)."""
        self.fn = None
        self.args = ()
        self.kwargs = {}

    def rearm(self, module: str, what: str, fn: Callable[..., Any], args: tuple[Any, ...],
              kwargs: dict[str, Any], lease: object) -> None:
        """Forward to ``fn`` again, for another registration (a parked atexit slot); the
        arguments are set before the function, which a call reads first."""
        self.module, self.what, self.lease = module, what, lease
        self.args, self.kwargs = args, kwargs
        self.fn = fn

    def __repr__(self) -> str:
        state = "detached" if self.fn is None else "live"
        return f"<livemod trampoline for {self.what} of module {self.module!r} ({state})>"


def _owner() -> Instance | None:
    # Frames: 0 here, 1 the interposed API, 2 its caller.
    inst = _provenance.caller(3)
    if inst is None:
        return None
    from ._state import State

    return inst if inst.state in (State.LOADING, State.COMING, State.LIVE) else None


def _atexit_register(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Callable[..., Any]:
    inst = _owner()
    if inst is None:
        return _REAL["atexit.register"](fn, *args, **kwargs)  # type: ignore[no-any-return]
    register_atexit(inst, fn, args, kwargs, where=_where())
    return fn


def register_atexit(
    inst: Instance, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
    *, where: str,
) -> None:
    """``atexit.register(fn, *args, **kwargs)`` for module ``inst``, undone at unload (the
    trampoline is parked in its slot for a later registration: ``_atexit_slots``)."""
    what = f"atexit callback {_qualname(fn)} ({where})"
    lease = object()

    def make() -> Trampoline:
        tramp = Trampoline(inst.name, what, fn, args, kwargs)
        tramp.lease = lease
        return tramp

    tramp, slot = _atexit_slots.take(
        _REAL["atexit.register"], make,
        lambda t: t.rearm(inst.name, what, fn, args, kwargs, lease))

    def release() -> bool:
        if tramp.lease is not lease:
            return False  # taken back already, or re-armed for another registration
        tramp.lease = None
        tramp.detach()
        return True

    def undo() -> None:
        _atexit_slots.park(tramp, slot, release)

    inst.own_list("atexit_undo").append((tramp, lease, undo))
    inst.undo.push(f"atexit callback {_qualname(fn)} registered directly at {where}", undo)


def unregister_atexit(inst: Instance, fn: Callable[..., Any]) -> None:
    """``atexit.unregister(fn)`` by module ``inst``: its registrations of a function equal to
    ``fn`` (as atexit compares) are taken back now."""
    keep = []
    for tramp, lease, undo in inst.atexit_undo:
        if tramp.lease is not lease:
            continue  # taken back already
        if tramp.fn is fn or tramp.fn == fn:
            undo()
        else:
            keep.append((tramp, lease, undo))
    inst.own_list("atexit_undo")[:] = keep


def _addaudithook(hook: Callable[[str, tuple[Any, ...]], Any], /) -> None:
    inst = _owner()
    if inst is None:
        return _REAL["sys.addaudithook"](hook)  # type: ignore[no-any-return]
    tramp = Trampoline(inst.name, f"audit hook {_qualname(hook)}", hook)
    _REAL["sys.addaudithook"](tramp)
    inst.undo.push(f"audit hook {_qualname(hook)} (detached; audit hooks stay for the "
                   f"life of the process)", tramp.detach)
    return None


def _register_at_fork(
    *,
    before: Callable[[], Any] | None = None,
    after_in_child: Callable[[], Any] | None = None,
    after_in_parent: Callable[[], Any] | None = None,
) -> None:
    inst = _owner()
    given = {"before": before, "after_in_child": after_in_child,
             "after_in_parent": after_in_parent}
    given = {k: v for k, v in given.items() if v is not None}
    live: dict[str, Callable[..., Any]] = {k: v for k, v in given.items() if v is not None}
    if inst is None:
        return _REAL["os.register_at_fork"](**given)  # type: ignore[no-any-return]
    tramps = {k: Trampoline(inst.name, f"fork handler {k}={_qualname(v)}", v)
              for k, v in live.items()}
    _REAL["os.register_at_fork"](**tramps)

    def undo() -> None:
        for tramp in tramps.values():
            tramp.detach()

    inst.undo.push(f"fork handlers {', '.join(t.what for t in tramps.values())} (detached)",
                   undo)
    return None


def _register_error(name: str, handler: Callable[[UnicodeError], Any], /) -> None:
    inst = _owner()
    if inst is None:
        return _REAL["codecs.register_error"](name, handler)  # type: ignore[no-any-return]
    try:
        previous: Callable[..., Any] | None = codecs.lookup_error(name)
    except LookupError:
        previous = None
    if type(previous) is Trampoline and previous.fn is None:
        previous = previous.fallback  # a dead one of an earlier version: skip it

    def strict(exc: UnicodeError) -> Any:
        raise exc

    tramp = Trampoline(inst.name, f"codec error handler {name!r}", handler,
                       fallback=previous or strict)
    _REAL["codecs.register_error"](name, tramp)
    inst.undo.push(f"codec error handler {name!r} (detached: back to the handler before it)",
                   tramp.detach)
    return None


def _codecs_register(search: Callable[[str], Any], /) -> None:
    inst = _owner()
    _REAL["codecs.register"](search)
    if inst is not None:
        inst.undo.push(f"codec search function {_qualname(search)}",
                       lambda: codecs.unregister(search))


def _add_handler(self: logging.Logger, hdlr: logging.Handler) -> None:
    _REAL["logging.Logger.addHandler"](self, hdlr)
    inst = _owner()
    if inst is not None:  # a stdlib handler on a public logger is not the module's by type
        inst.undo.push(f"logging handler {class_qualname(type(hdlr))} on logger {self.name!r}",
                       lambda: _remove_from(self, "handlers", hdlr))


def _add_filter(self: logging.Filterer, filter: Any) -> None:
    _REAL["logging.Filterer.addFilter"](self, filter)
    inst = _owner()
    if inst is not None:
        inst.undo.push(f"logging filter {class_qualname(type(filter))}",
                       lambda: _remove_from(self, "filters", filter))


def _remove_from(target: object, attr: str, item: object) -> None:
    with logging._lock:  # type: ignore[attr-defined]
        items = ns_get(vars(target), attr)
        for i, existing in enumerate(items if type(items) is list else ()):
            if existing is item:
                del items[i]
                return


def _qualname(fn: object) -> str:
    t = type(fn)
    if t is types.FunctionType or t is types.BuiltinFunctionType or t is types.MethodType:
        name = getattr(fn, "__qualname__", None)
        if type(name) is str:
            return name
    return f"{class_qualname(type(fn))} object"


def _where() -> str:
    try:
        frame = sys._getframe(3)
    except ValueError:
        return "?"
    code = frame.f_code
    where = f"{os.path.basename(code.co_filename)}:{frame.f_lineno}"
    del frame
    return where


#: (owner object, attribute, replacement)
_TARGETS: Final[tuple[tuple[Any, str, str, Callable[..., Any]], ...]] = (
    (atexit, "register", "atexit.register", _atexit_register),
    (sys, "addaudithook", "sys.addaudithook", _addaudithook),
    (os, "register_at_fork", "os.register_at_fork", _register_at_fork),
    (codecs, "register_error", "codecs.register_error", _register_error),
    (codecs, "register", "codecs.register", _codecs_register),
    (logging.Logger, "addHandler", "logging.Logger.addHandler", _add_handler),
    (logging.Filterer, "addFilter", "logging.Filterer.addFilter", _add_filter),
)


def install() -> None:
    """Interpose the registration APIs (once per process; calls from anything but module
    code go straight through)."""
    with _lock:
        if _REAL:
            return
        for owner, attr, key, replacement in _TARGETS:
            real = getattr(owner, attr, None)
            if real is None:  # os.register_at_fork is missing on some platforms
                continue
            _REAL[key] = real
            replacement.__doc__ = real.__doc__
            setattr(owner, attr, replacement)


def installed() -> bool:
    return bool(_REAL)


def real(key: str) -> Callable[..., Any]:
    """The API as it was before livemod interposed it."""
    return _REAL.get(key) or {t[2]: getattr(t[0], t[1]) for t in _TARGETS}[key]
