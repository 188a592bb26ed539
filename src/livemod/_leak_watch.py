"""Taking the leak watch of an unloaded instance: weak references to what it defined.

Runs none of the module's code: namespaces are read through the builtin types'
descriptors, kinds are told by ``type(x)`` and ``__mro__`` (``isinstance`` would read a
``__class__`` property), and class attributes are read from the class's own dict
(``getattr`` would run a six-style lazy descriptor, which imports on access; that once
wedged a module GOING).
"""

from __future__ import annotations

import contextlib
import types
import weakref
from collections.abc import Iterable
from typing import Any, Final

from ._leaks import LeakWatch
from ._owned import among, class_module, class_qualname, mro, safe_vars

__all__ = ["watch"]

_MAX_REFS: Final = 2000


def watch(name: str, version: str, modules: Iterable[types.ModuleType]) -> LeakWatch:
    """Take weak references to the modules and what they define (call before unloading).

    Runs none of the module's code: namespaces are read through the builtin types'
    descriptors, kinds are told by ``type(x)`` and ``__mro__`` (``isinstance`` would read a
    ``__class__`` property), and class attributes are read from the class's own dict
    (``getattr`` would run a six-style lazy descriptor, which imports on access).
    """
    modules = list(modules)
    namespaces = [ns for ns in (safe_vars(m) for m in modules) if type(ns) is dict]
    ids = {id(ns) for ns in namespaces}
    names = {n for n in (dict.get(ns, "__name__") for ns in namespaces) if type(n) is str}
    refs: list[tuple[str, weakref.ref[Any]]] = []
    seen: set[int] = set()
    first = min(names, key=len) if names else ""

    def add(desc: str, obj: Any) -> None:
        if id(obj) in seen or len(refs) >= _MAX_REFS:
            return
        seen.add(id(obj))
        with contextlib.suppress(TypeError):  # not weak-referenceable: cannot be watched
            refs.append((desc, weakref.ref(obj)))

    def user_name(private: str) -> str:
        return name + private[len(first):] if first and private.startswith(first) else private

    def add_function(short: str, fn: types.FunctionType) -> None:
        if id(fn.__globals__) in ids:
            add(f"{short}.{fn.__qualname__} (function)", fn)
            add(f"{short}.{fn.__qualname__} (code)", fn.__code__)

    for m, ns in zip(modules, namespaces, strict=False):
        short = user_name(str(dict.get(ns, "__name__", "?")))
        add(f"{short} (module)", m)
        for value in list(ns.values()):
            t = type(value)
            if t is types.FunctionType:
                add_function(short, value)
            elif among(type, mro(t)) and class_module(value) in names:
                add(f"{short}.{class_qualname(value)} (class)", value)
                for attr in list((safe_vars(value) or {}).values()):
                    ta = type(attr)
                    if ta is staticmethod or ta is classmethod:
                        attr = attr.__func__  # the builtin descriptors' own field
                        ta = type(attr)
                    if ta is types.FunctionType:
                        add_function(short, attr)
    watch = LeakWatch(name, version, refs, {n: user_name(n) for n in names})
    files = (dict.get(ns, "__file__") for ns in namespaces)
    watch.files = frozenset(p for p in files if type(p) is str)
    return watch
