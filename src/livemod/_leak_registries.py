"""The leak report's first look: the registries where real code leaves modules behind.

A referrer walk costs a full-heap ``gc.get_referrers`` per step and often runs out of time
before it reaches a root; most leaks of real packages, though, sit in a handful of known
places. So before any walk, the report looks into each of them directly for an entry that
is the unloaded module's (``_owned.Owner``: by identity, never running its code) and says
where it is in words: "held by the singledispatch registry of renderlib.render_value".
The walk runs only when none of them explains the survivors.

Every look is one small function that returns phrases; a failing one is skipped.
"""

from __future__ import annotations

import copyreg
import itertools
import logging
import sys
import threading
import time
import typing
import warnings
from collections.abc import Callable, Iterator
from typing import Any, Final

from . import _sysmodules
from ._owned import Owner, class_qualname, safe_vars

__all__ = ["explain", "holders", "outside_gc"]

_log = logging.getLogger("livemod")

#: Most phrases one report gives.
_MAX: Final = 8
#: Most items of one container looked at.
_SCAN: Final = 100
#: The deadline of the report under way in this thread (read by the longest look).
_bound = threading.local()


def _typing(o: Owner) -> Iterator[str]:
    registry = getattr(typing, "_overload_registry", {})
    for key in list(registry):
        if o.owns_name(key):
            yield f"overloads of {o.public(key)} <- held by typing's overload registry"


def _warnings(o: Owner) -> Iterator[str]:
    for f in list(warnings.filters):
        if type(f) is tuple and len(f) > 2 and o.owns(f[2]):
            yield f"{o.describe(f[2])} <- held by a warnings filter ({f[0]!r})"


def _logging(o: Owner) -> Iterator[str]:
    manager = logging.Logger.manager
    loggers: list[Any] = [manager.root, *list(manager.loggerDict.values())]
    for lg in loggers:
        if type(lg) is logging.PlaceHolder or o.owns(lg):
            continue
        attrs = _attrs(lg)
        name = attrs.get("name")
        for h in list(attrs.get("handlers") or ()):
            held = h if o.owns(h) else next(
                (v for v in list(_attrs(h).values()) if o.owns(v)), None)
            if held is not None:
                yield (f"{o.describe(held)} <- held by logging handler "
                       f"{class_qualname(type(h))} on logger {name!r}")
        for f in list(attrs.get("filters") or ()):
            if o.owns(f):
                yield f"{o.describe(f)} <- held by a logging filter on logger {name!r}"


def _copyreg(o: Owner) -> Iterator[str]:
    for key, value in list(copyreg.dispatch_table.items()):
        if o.owns(key) or o.owns(value):
            yield f"{o.describe(key)} <- held by copyreg's dispatch table"


def _singledispatch(o: Owner) -> Iterator[str]:
    from ._scrub_registries import dispatchers, registry_of

    for fn, label in dispatchers():
        registry = registry_of(fn)
        for key, value in list((registry or {}).items()):
            if o.owns(key) or (key is not object and o.owns(value)):
                held = key if o.owns(key) else value
                yield f"{o.describe(held)} <- held by the singledispatch registry of {label}"
                break


_SLOTS: Final[tuple[tuple[str, Callable[[], Any]], ...]] = (
    ("sys.excepthook", lambda: sys.excepthook),
    ("threading.excepthook", lambda: threading.excepthook),
    ("sys.unraisablehook", lambda: sys.unraisablehook),
    ("sys.displayhook", lambda: sys.displayhook),
    ("sys.breakpointhook", lambda: sys.breakpointhook),
    ("warnings.showwarning", lambda: warnings.showwarning),
)


def _slots(o: Owner) -> Iterator[str]:
    for name, read in _SLOTS:
        value = read()
        if o.owns(value):
            yield f"{o.describe(value)} <- held by {name}"


def _sys_modules(o: Owner) -> Iterator[str]:
    for key, value in list(_sysmodules.snapshot().items()):
        if not o.owns_name(key) and o.owns(value):
            yield f"{o.describe(value)} <- held by sys.modules[{key!r}]"


def _globals(o: Owner) -> Iterator[str]:
    deadline = getattr(_bound, "deadline", float("inf"))
    for key, module in list(_sysmodules.snapshot().items()):
        if time.thread_time() > deadline:
            return
        if o.owns_name(key):
            continue
        ns = safe_vars(module)
        if type(ns) is not dict:
            continue
        for attr, value in list(ns.items()):
            if o.owns(value):
                yield f"{o.describe(value)} <- global {attr!r} of module {key}"
            else:
                inside = _inside(o, value)
                if inside is not None:
                    yield f"{inside} <- global {attr!r} of module {key}"


def _inside(o: Owner, value: object) -> str | None:
    """Where a plain container (exact list, tuple, set or dict: no module code runs)
    holds one of the module's objects, one level down and within a bound."""
    t = type(value)
    if t is list or t is tuple:
        for i, item in enumerate(value[:_SCAN]):  # type: ignore[index]
            if o.owns(item):
                return f"{o.describe(item)} <- {t.__name__}[{i}]"
    elif t is dict:
        for k, item in list(itertools.islice(value.items(), _SCAN)):  # type: ignore[attr-defined]
            if o.owns(item) or o.owns(k):
                where = f"dict[{k!r}]" if type(k) is str else "dict key"
                return f"{o.describe(item if o.owns(item) else k)} <- {where}"
    elif t is set or t is frozenset:
        for item in list(itertools.islice(value, _SCAN)):  # type: ignore[call-overload]
            if o.owns(item):
                return f"{o.describe(item)} <- {t.__name__} member"
    return None


def _attrs(obj: object) -> dict[str, Any]:
    try:
        found = object.__getattribute__(obj, "__dict__")
    except AttributeError:
        return {}
    return found if type(found) is dict else {}


_LOOKS: Final[tuple[Callable[[Owner], Iterator[str]], ...]] = (
    _typing, _warnings, _logging, _copyreg, _singledispatch, _slots, _sys_modules, _globals,
)


def explain(name: str, names: dict[str, str], files: frozenset[str],
            budget: float) -> list[str]:
    """``holders`` for an unloaded module known by its private names and files."""
    if not names:
        return []
    return holders(Owner(name, min(names, key=len), files=files), budget)


def outside_gc(chain: str, native: tuple[str, ...], no_root: str, marker: str) -> str:
    """A chain with no root, of a module with native code: the holder is native."""
    head = chain[: -len(no_root)].rstrip(" <-")
    return f"{head} <- native code of {', '.join(native)} {marker}"


def holders(owner: Owner, budget: float = 0.25) -> list[str]:
    """Chains from the module's objects to the known registries that hold them, in
    words (empty: none of them does)."""
    found: list[str] = []
    deadline = time.thread_time() + budget
    _bound.deadline = deadline
    for look in _LOOKS:
        if time.thread_time() > deadline:  # a huge heap: leave the rest to the bounded walk
            break
        try:
            for phrase in look(owner):
                if time.thread_time() > deadline:
                    break
                if phrase not in found:
                    found.append(phrase)
                if len(found) >= _MAX:
                    return found
        except Exception:
            _log.debug("leak report: looking at %s failed", look.__name__, exc_info=True)
    return found
