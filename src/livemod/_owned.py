"""Whether an object belongs to one module -- decided without running any of its code.

The scrub at unload and the leak report both ask of objects found in process registries
"is this the unloaded module's?". The objects are arbitrary: a module may give its classes
a ``__class__`` property, a ``__getattr__`` (six's lazy attributes import on access), a
metaclass with ``__eq__``/``__hash__``/``__getattribute__``. ``isinstance`` reads
``__class__`` when the plain type check fails, ``getattr`` runs properties and
``__getattr__``, ``==`` runs ``__eq__``. So everything here reads through the descriptors of
the *builtin* types (``type.__dict__['__mro__']``, ``ModuleType.__dict__['__dict__']``...),
which no module can override, compares with ``is``, and looks at ``type(x)`` only.

A module is known by its private module names (``livemod.mods._h1.shop`` and its
submodules), the ids of its namespace dicts (valid only while the namespaces are alive: the
scrub runs before they are released), and its source files.
"""

from __future__ import annotations

import functools
import operator
import threading
import types
import weakref
from collections.abc import Iterable, Iterator
from collections.abc import Set as AbstractSet
from itertools import repeat
from typing import Any, Final, final

from ._nsget import ns_get

__all__ = [
    "Owner", "among", "attrs_of", "class_module", "class_qualname", "is_kind", "key_words", "kind",
    "module_name_of", "mro", "safe_vars",
]

_TYPE_MRO: Final = type.__dict__["__mro__"]
_TYPE_MODULE: Final = type.__dict__["__module__"]
_TYPE_DICT: Final = type.__dict__["__dict__"]
_TYPE_QUALNAME: Final = type.__dict__["__qualname__"]
_TYPE_FLAGS: Final = type.__dict__["__flags__"]
_HEAPTYPE: Final = 1 << 9  # Py_TPFLAGS_HEAPTYPE: made by a class statement or type()
_MODULE_DICT: Final[Any] = vars(types.ModuleType)["__dict__"]
_PARTIAL: Final = functools.partial
#: ``functools.lru_cache`` wrappers (typing's ``_tp_cache`` keeps one per decorated function).
_LRU: Final = type(functools.lru_cache(lambda: None))
#: Types whose instances can never belong to a module (nor hold one by themselves).
_NEVER: Final = frozenset(map(id, {
    type(None), bool, int, float, complex, str, bytes, bytearray, tuple, list, dict, set,
    frozenset, types.WrapperDescriptorType,
    types.MethodDescriptorType, types.GetSetDescriptorType, types.MemberDescriptorType,
}))
#: Types whose instances ``owns`` looks into one by one.
_EACH: Final = frozenset(map(id, (
    types.FunctionType, types.ModuleType, types.CodeType, types.MethodType,
    types.BuiltinMethodType, _LRU, _PARTIAL,
)))


#: Every module's private name starts with this (``_loader.PREFIX``).
_ROOT: Final = "livemod.mods."
#: id(type) -> (a weak reference to it, id of its ``__mro__`` then, the ``__module__`` names
#: under ``_ROOT`` along that MRO). What ``_owns_type`` asks of every heap type it meets,
#: answered once per type rather than once per unload: the same types (finders, handlers,
#: loggers) fill the registries at every unload, and a host of 400 modules with a warnings
#: category each asked it 400 times per unload (2.7 ms). No names: no module's type,
#: whatever the Owner. A new ``__mro__`` (bases assigned) is a new tuple; a class's
#: ``__module__`` is assumed not to be rewritten after the type is first met.
_MRO_NAMES: dict[int, tuple[weakref.ref[type], int, tuple[str, ...]]] = {}
_MRO_NAMES_MAX: Final = 4096
_mro_names_lock = threading.Lock()  # protects: pruning _MRO_NAMES


def _rooted_modules(t: type) -> tuple[str, ...]:
    """The module names under ``_ROOT`` of the classes in ``t``'s MRO (empty: ``t`` is
    no livemod module's class, nor derived from one)."""
    line = mro(t)
    known = _MRO_NAMES.get(id(t))
    if known is not None and known[0]() is t and known[1] == id(line):
        return known[2]
    names = tuple(n for n in map(class_module, line) if type(n) is str and n.startswith(_ROOT))
    try:
        ref = weakref.ref(t)
    except TypeError:
        return names
    with _mro_names_lock:
        if len(_MRO_NAMES) >= _MRO_NAMES_MAX:  # forget the dead, or everything
            dead = [k for k, (r, _, _) in list(_MRO_NAMES.items()) if r() is None]
            for k in dead if len(dead) > _MRO_NAMES_MAX // 4 else list(_MRO_NAMES):
                _MRO_NAMES.pop(k, None)
        _MRO_NAMES[id(t)] = (ref, id(line), names)
    return names


def mro(cls: type) -> tuple[type, ...]:
    """``cls.__mro__`` read through ``type``'s own descriptor (a metaclass cannot intercept)."""
    try:
        return _TYPE_MRO.__get__(cls)  # type: ignore[no-any-return]
    except TypeError:
        return ()


def among(x: object, items: Iterable[object]) -> bool:
    """``x in items`` by identity (``in`` would call ``__eq__``, a metaclass's too)."""
    return any(map(operator.is_, items, repeat(x)))


def kind(obj: object, base: type) -> bool:
    """``isinstance(obj, base)`` by the real type only (never reads ``obj.__class__``)."""
    return among(base, mro(type(obj)))


def class_module(cls: type) -> str | None:
    """A class's ``__module__`` read from its own dict (heap types) or tp_name (static)."""
    try:
        value = _TYPE_MODULE.__get__(cls)
    except (TypeError, AttributeError):
        return None
    return value if type(value) is str else None


def class_qualname(cls: type) -> str:
    try:
        value = _TYPE_QUALNAME.__get__(cls)
    except (TypeError, AttributeError):
        return "?"
    return value if type(value) is str else "?"


def safe_vars(obj: object) -> dict[str, Any] | types.MappingProxyType[str, Any] | None:
    """The namespace of a module or class without running code, else None."""
    t = type(obj)
    if t is types.ModuleType:  # the common cases first: this runs over every module
        return obj.__dict__
    if t is type:
        return _TYPE_DICT.__get__(obj)  # type: ignore[no-any-return]
    if kind(obj, type):
        try:
            return _TYPE_DICT.__get__(obj)  # type: ignore[no-any-return]
        except TypeError:
            return None
    if kind(obj, types.ModuleType):
        try:
            found = _MODULE_DICT.__get__(obj)
        except TypeError:
            return None
        return found if type(found) is dict else None
    return None


def module_name(module: types.ModuleType) -> str | None:
    ns = safe_vars(module)
    name = dict.get(ns, "__name__") if type(ns) is dict else None
    return name if type(name) is str else None


class _EveryFile(frozenset[str]):
    """Every file (``Owner.every_module``): what cannot be decided counts as owned."""

    __slots__ = ()

    def __contains__(self, item: object) -> bool:
        return True


_EVERY_FILE: Final = _EveryFile()


@final
class Owner:
    """One module's identity, for asking "is this object its?".

    Attributes:
        name: the name a person knows (``shop``).
        private_name: its private module name (``livemod.mods._h1.shop``).
        dict_ids: ids of its namespace dicts (only meaningful while they are alive).
        files: its source files (absolute paths).
    """

    __slots__ = ("_below", "_rooted", "_types", "dict_ids", "files", "name", "private_name")

    def __init__(
        self,
        name: str,
        private_name: str,
        dict_ids: Iterable[int] = (),
        files: Iterable[str] = (),
    ) -> None:
        self.name = name
        self.private_name = private_name
        self._below = private_name + "."
        self._rooted = private_name.startswith(_ROOT)  # whether _MRO_NAMES may answer for it
        self.dict_ids = frozenset(dict_ids)
        self.files = frozenset(files)
        # id(type) -> (the type, whether it or a base is the module's). The type is kept so
        # that its id cannot be reused while this Owner lives (one scrub or one report).
        self._types: dict[int, tuple[type, bool]] = {}

    @classmethod
    def every_module(cls, dict_ids: AbstractSet[int]) -> Owner:
        """One Owner for every loaded livemod module at once: names under ``livemod.mods.``,
        the namespaces ``dict_ids`` (read as they are, not copied: the caller's live set),
        and every file -- a code object, or a function whose globals have no name, counts
        as owned, since no list of every module's files is kept."""
        owner = cls("livemod", _ROOT[:-1])
        owner._rooted = True  # _MRO_NAMES knows the types no livemod module has
        owner.dict_ids = dict_ids  # type: ignore[assignment]
        owner.files = _EVERY_FILE
        return owner

    def owns_name(self, module: object) -> bool:
        """Whether a module name (a string) is the module's or one of its submodules'."""
        if type(module) is not str:
            return False
        return module.startswith(self._below) or module == self.private_name

    def owns_class(self, cls: type) -> bool:
        return self.owns_name(class_module(cls))

    def owns(self, obj: object, depth: int = 2) -> bool:
        """Whether ``obj`` is the module's: its function, class, module, code, an instance
        of one of its classes, or a bound method / partial / lru_cache of such (``depth``
        levels)."""
        t = type(obj)
        if id(t) in _NEVER:
            return False
        if t is types.FunctionType:
            return self._owns_function(obj)  # type: ignore[arg-type]
        if t is types.ModuleType:  # the plain type: its __dict__ is ModuleType's own
            ns = obj.__dict__
            return id(ns) in self.dict_ids or self.owns_name(ns_get(ns, "__name__"))
        if t is types.CodeType:
            return obj.co_filename in self.files  # type: ignore[attr-defined]
        if depth > 0 and (t is types.MethodType or t is types.BuiltinMethodType):
            if t is types.MethodType and self.owns(obj.__func__, depth - 1):  # type: ignore[attr-defined]
                return True
            return self.owns(obj.__self__, depth - 1)  # type: ignore[attr-defined]
        if depth > 0 and t is _LRU:  # the function it wraps, from its own __dict__
            wrapped = dict.get(attrs_of(obj), "__wrapped__")
            return wrapped is not None and self.owns(wrapped, depth - 1)
        if depth > 0 and t is _PARTIAL:
            return self.owns(obj.func, depth - 1) or any(  # type: ignore[attr-defined]
                self.owns(a, depth - 1) for a in obj.args  # type: ignore[attr-defined]
            )
        meta = mro(t)
        if among(type, meta):  # a class (its metaclass counts too); each decided once
            return self._owns_type(obj) or self._owns_type(t)  # type: ignore[arg-type]
        if among(types.ModuleType, meta):
            found: Any = safe_vars(obj)
            if found is not None and id(found) in self.dict_ids:
                return True
            return self.owns_name(module_name(obj))  # type: ignore[arg-type]
        return self._owns_type(t)

    def sift(self, items: Iterable[Any]) -> list[Any]:
        """The items ``owns`` accepts, in order -- at the cost of one ``owns``-like look per
        distinct type for most of them (registries hold many objects of few types).

        The same answers as ``[x for x in items if self.owns(x)]``: an object of an
        ordinary type (not a function, method, module, code, partial, lru_cache or class)
        is the module's exactly when its type is, which is decided once per type here.
        Types are keyed by id (a metaclass's ``__hash__`` must not run), and ``kinds``
        keeps them alive meanwhile.
        """
        items = list(items)
        if len(items) < 8:  # not worth the passes below
            return [x for x in items if self.owns(x)]
        kinds = list(map(type, items))
        distinct = dict(zip(map(id, kinds), kinds, strict=True))
        look = {tid for tid, t in distinct.items() if tid not in _NEVER and (
            tid in _EACH or self._owns_type(t) or among(type, meta := mro(t))
            or among(types.ModuleType, meta))}
        if not look:
            return []
        return [x for x, t in zip(items, kinds, strict=True) if id(t) in look and self.owns(x)]

    def _owns_type(self, t: type) -> bool:
        if not _TYPE_FLAGS.__get__(t) & _HEAPTYPE:
            return False  # a static (C) type: its bases are static too, none a module's
        known = self._types.get(id(t))
        if known is None:
            if self._rooted:
                # A name not under livemod.mods. is no rooted owner's: only those count.
                names = _rooted_modules(t)
                if not names:
                    return False  # no module's type (remembered process-wide)
                known = (t, any(map(self.owns_name, names)))
            else:
                known = (t, any(map(self.owns_name, map(class_module, mro(t)))))
            self._types[id(t)] = known
        return known[1]

    def _owns_function(self, fn: types.FunctionType) -> bool:
        g = fn.__globals__
        if id(g) in self.dict_ids:
            return True
        name = dict.get(g, "__name__")
        if name is not None:  # another version loaded from the same file has another name
            return self.owns_name(name)
        return fn.__code__.co_filename in self.files  # exec'd with fresh globals

    def describe(self, obj: object) -> str:
        """A short name for one of the module's objects, for reports (no code runs)."""
        t = type(obj)
        if t is types.FunctionType:
            return f"{self.name}.{obj.__qualname__}"  # type: ignore[attr-defined]
        if among(type, mro(t)):
            return f"class {self.public(class_module(obj) or '')}.{class_qualname(obj)}"  # type: ignore[arg-type]
        if t is types.MethodType:
            return f"bound method {self.describe(obj.__func__)}"  # type: ignore[attr-defined]
        return f"{self.public(class_module(t) or '?')}.{class_qualname(t)} object"

    def public(self, private: str) -> str:
        """The name a person knows for one of its private module names."""
        if self.owns_name(private):
            return self.name + private[len(self.private_name):]
        return private


def owned_in(owner: Owner, items: Iterable[Any]) -> Iterator[Any]:
    return (item for item in items if owner.owns(item))


def is_kind(obj: object, cls: Any) -> bool:
    """``isinstance`` by the real type only: never reads ``obj.__class__`` (a property of a
    module's class would run)."""
    bases = mro(type(obj))
    return any(among(c, bases) for c in getattr(cls, "__args__", (cls,)))


def key_words(key: object) -> str:
    """A dict key in words; only plain keys are repr'd (a module's ``__repr__`` would run)."""
    t = type(key)
    plain = t is str or t is int or t is float or t is bool or t is bytes
    return repr(key) if plain else f"{class_qualname(t)} object"


def module_name_of(module: Any) -> str:
    ns = safe_vars(module)
    name = dict.get(ns, "__name__") if type(ns) is dict else None
    return name if type(name) is str else "?"


def attrs_of(obj: object) -> dict[str, Any]:
    try:
        found = object.__getattribute__(obj, "__dict__")
    except AttributeError:
        return {}
    return found if type(found) is dict else {}
