"""A consistent copy of ``sys.modules``, and which of its entries need a look at unload.

**The copy.** ``list(sys.modules.items())`` is not atomic: building each item allocates, an
allocation may run a garbage collection, a collection may run finalizers, and a finalizer
lets another thread run and import, so the iteration fails with "dictionary changed size
during iteration" (seen with two hosts loading at once). ``dict.copy()`` allocates the new
dict before it reads the old one and then copies without running Python code, so it is one
consistent view on every supported CPython (free-threaded builds lock the dict for it).

**The entries worth a look.** Every unload looks through all of ``sys.modules`` for public
entries the module's code put there (``_wire``), and reading several hundred module objects,
their namespaces and their names is bound by memory: in an unload's cold caches it was a
sixth of an idle rmmod, and more under load. Almost all of those entries are the same from
one unload to the next: installed modules, none of them any livemod module's. So the last
look's verdict is remembered per key: "this key held this very module (a weak reference:
nothing is kept alive), a plain module that no livemod module owns". An entry is known
again when its key holds the same object; finding out is a few C-level passes that read
the keys and the references, not the modules. Everything else is returned for the exact
look: values that are not plain modules, new or replaced values, the namespaces of loaded
livemod modules under any other name (one may have renamed itself: its name no longer
says whose it is, so their ids are registered while they are loaded).

The entries the loader made for the other loaded livemod modules are remembered the same
way: a key under ``livemod.mods.`` that holds a loaded module's own namespace by its own
name (``__name__`` is the key). Such an entry is the business of the module whose private
name it is under, and of no other: every unload asks with its private name, and gets its
own keys back whether remembered or not (the remembered ones are indexed by private name).
Until they were remembered, a host of 400 modules read all 400 of those entries at every
unload: 200 us of an rmmod's CPU there, against 35 in an empty host.

A foreign verdict stays true for the object's life: a module's namespace dict is fixed for
its life, and a livemod module loaded later has new namespaces. (A module whose
``__name__`` is later rewritten to a livemod name is not looked at again; nothing does
that.) A key that is not an exact ``str`` (its ``__hash__`` could run code) turns the
shortcut off for that look: every entry is returned.
"""

from __future__ import annotations

import operator
import sys
import threading
import types
import weakref
from collections.abc import Callable, Iterable
from collections.abc import Set as AbstractSet
from itertools import compress, repeat
from typing import Any, Final

from ._nsget import ns_get

__all__ = [
    "changed_keys", "drop_namespaces", "loaded_namespaces", "register_namespaces", "snapshot",
    "str_keys", "unknown",
]

#: Every livemod module's private name starts with this (``_loader.PREFIX``).
_ROOT: Final = "livemod.mods."
_MODULE: Final = types.ModuleType
_DEREF: Final[Callable[[weakref.ref[Any]], Any]] = operator.call  # twice ref.__call__'s speed

_lock = threading.Lock()  # protects: _known, _namespaces
#: key -> a weak reference to the plain, foreign module it held when last looked at.
_known: dict[str, weakref.ref[types.ModuleType]] = {}
#: private name -> the keys under it that ``_known`` holds (in a dict: in order).
_own: dict[str, dict[str, None]] = {}
#: ids of the namespace dicts of every loaded livemod module (alive meanwhile).
_namespaces: set[int] = set()


class _Gone:
    pass


#: What an unknown key reads as: a reference that is dead (no module is ``None``).
_NONE: Final[weakref.ref[Any]] = weakref.ref(_Gone())


def snapshot() -> dict[str, types.ModuleType]:
    """A private copy of ``sys.modules`` taken in one step."""
    return sys.modules.copy()


def register_namespaces(modules: Iterable[types.ModuleType]) -> frozenset[int]:
    """A livemod module was loaded: the ids of its namespaces, which are never taken for
    foreign ones until ``drop_namespaces``."""
    ids = frozenset(id(vars(m)) for m in modules)
    with _lock:
        _namespaces.update(ids)
    return ids


def loaded_namespaces() -> AbstractSet[int]:
    """The ids of every loaded livemod module's namespaces (valid while they are loaded):
    the live set itself, to read (one membership test at a time) and never to change."""
    return _namespaces


def drop_namespaces(ids: Iterable[int]) -> None:
    """It is being unloaded (its namespaces are still alive when this is called)."""
    with _lock:
        _namespaces.difference_update(ids)


def unknown(snap: dict[Any, Any], private: str) -> list[tuple[Any, Any]]:
    """The items of ``snap`` (a ``snapshot``) that are not known to be another module's
    entries, in order, with every item under the private name ``private`` (the module being
    unloaded); the plain foreign modules and the other livemod modules' own entries among
    them are remembered for the next look."""
    with _lock:
        if not str_keys(snap):
            return list(snap.items())
        # Over the keys, not the items: an item is a tuple made for each entry, kept or not.
        items = [(key, snap[key]) for key in changed_keys(snap, _known)]
        # Its own entries remembered at an earlier look (another module's unload), which
        # that pass skipped: every other key of its own was not remembered, so is in items.
        mine = [(key, value) for key in _own.get(private, ())
                if (value := snap.get(key, _NONE)) is not _NONE
                and _known.get(key, _NONE)() is value]
        found = []
        for key, value in items:
            if type(value) is not _MODULE:
                found.append((key, value))
                continue
            ns = value.__dict__
            name = ns_get(ns, "__name__")  # not ns.get: see _nsget
            if type(name) is not str:
                found.append((key, value))
            elif not key.startswith(_ROOT):
                if id(ns) not in _namespaces and not name.startswith(_ROOT):
                    _known[key] = weakref.ref(value)  # foreign
                else:
                    found.append((key, value))
            else:
                if name == key and id(ns) in _namespaces:  # a loaded module's own entry
                    _known[key] = weakref.ref(value)
                    _own.setdefault(_top(key), {})[key] = None
                found.append((key, value))  # this look still wants it
        found += mine
        if len(_known) > 2 * len(snap) + 256:  # keys long gone: forget them
            for key in [k for k in _known if k not in snap]:
                del _known[key]
                top = _top(key)
                if top in _own:
                    _own[top].pop(key, None)
                    if not _own[top]:
                        del _own[top]
        return found


def str_keys(snap: dict[Any, Any]) -> bool:
    """Whether every key of ``snap`` is an exact ``str`` (whose hash runs no module code)."""
    return list(map(type, snap)).count(str) == len(snap)


def changed_keys(snap: dict[str, Any], memo: dict[str, weakref.ref[Any]]) -> list[str]:
    """The keys of ``snap`` (exact strings) whose value is not, by identity, the one
    ``memo`` holds a weak reference to (or that ``memo`` lacks), in order: C-level passes
    over the keys and the references, which never touch the modules."""
    same = map(_DEREF, map(memo.get, snap, repeat(_NONE)))
    return list(compress(snap, map(operator.is_not, same, snap.values())))


def _top(key: str) -> str:
    # livemod.mods.<tag>.<name>[.sub...] -> livemod.mods.<tag>.<name>: a private name
    return ".".join(key.split(".", 4)[:4])
