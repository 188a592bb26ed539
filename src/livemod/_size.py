"""How much memory a loaded module holds: the ``Size`` column of ``lsmod``.

The kernel's Size is the bytes of a module's sections. A Python module has no sections,
so this is the bytes of the objects that are the module's own, found by walking from its
namespaces: the namespace dicts, its functions (those whose globals are one of its
namespaces) with their code, defaults and closures, its classes (``__module__`` under its
private name) and their dicts, and the builtin containers, strings and numbers reachable
from those -- plus the shallow size of any instance. The walk stops at what belongs to
somebody else: other modules, functions and classes defined elsewhere, builtins, and the
insides of instances of foreign classes (a logger in a global would otherwise count every
logger of the process).

It never runs module code: sizes come from ``object.__sizeof__`` unless the type is a
builtin one (a class of the module could define ``__sizeof__``), traversal from
``gc.get_referents`` (C-level), attributes from ``type.__dict__``. It is a measure taken
when asked (``lsmod``), outside the host lock; it costs one pass over the module's objects.
"""

from __future__ import annotations

import builtins
import dataclasses
import gc
import sys
import types
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Final

from ._loader import namespaces_of

if TYPE_CHECKING:
    from ._instance import Instance, ModuleStatus

__all__ = ["measure", "sized"]

#: Containers and scalars whose insides are walked; everything else counts shallowly.
_WALKED: Final = frozenset({
    dict, list, tuple, set, frozenset, str, bytes, bytearray, int, float, complex,
    types.CellType, types.CodeType, types.MethodType, property, staticmethod, classmethod,
})
#: Singletons and shared objects that nobody holds alone.
_SHARED: Final = frozenset({id(None), id(True), id(False), id(Ellipsis), id(NotImplemented)})
_BUILTIN_TYPES: Final = frozenset(v for v in vars(builtins).values() if isinstance(v, type))


def _shallow(obj: object) -> int:
    cls = type(obj)
    if cls in _BUILTIN_TYPES or cls.__module__ == "builtins":
        return sys.getsizeof(obj, 0)  # builtin __sizeof__: no module code runs
    return object.__sizeof__(obj)


def measure(modules: Iterable[types.ModuleType], private_name: str) -> int:
    """Bytes held by the objects of the module whose namespaces are ``modules``."""
    roots = list(modules)
    namespaces = {id(vars(m)) for m in roots}
    own = {id(m) for m in roots}
    prefix = private_name + "."
    seen: set[int] = set(_SHARED)
    total = 0
    stack: list[object] = [*roots, *(vars(m) for m in roots)]
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        cls = type(obj)
        if issubclass(cls, types.ModuleType):
            if id(obj) not in own:
                continue
        elif cls is types.FunctionType:
            if id(obj.__globals__) not in namespaces:  # type: ignore[attr-defined]
                continue
        elif isinstance(obj, type):
            where = obj.__dict__.get("__module__")
            if not (isinstance(where, str) and (where == private_name or where.startswith(prefix))):
                continue
        elif cls in (types.BuiltinFunctionType, types.WrapperDescriptorType,
                     types.MethodDescriptorType, types.GetSetDescriptorType,
                     types.MemberDescriptorType, types.MethodWrapperType):
            continue
        total += _shallow(obj)
        if (cls in _WALKED or cls is types.FunctionType or isinstance(obj, type)
                or id(obj) in own):
            stack.extend(gc.get_referents(obj))
        elif id(cls) not in seen and _is_own_class(cls, private_name, prefix):
            stack.extend(gc.get_referents(obj))  # an instance of the module's own class
    return total


def _is_own_class(cls: type, private_name: str, prefix: str) -> bool:
    where = cls.__dict__.get("__module__")
    return isinstance(where, str) and (where == private_name or where.startswith(prefix))


def sized(rows: Sequence[ModuleStatus], instances: Sequence[Instance]) -> list[ModuleStatus]:
    """``lsmod`` rows with ``size`` filled in, one instance per row (same order)."""
    return [dataclasses.replace(row, size=measure(_namespaces(inst), inst.private_name))
            for row, inst in zip(rows, instances, strict=True)]


def _namespaces(inst: Instance) -> list[types.ModuleType]:
    found = namespaces_of(inst.private_name)
    return found or ([inst.module] if inst.module is not None else [])
