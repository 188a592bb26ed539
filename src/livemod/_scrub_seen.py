"""Registries seen clean: what a scrub looked at last and found nothing of any module in.

Each registry scrubber first asks whether anything of the unloaded module's is in its
registry at all (``_none_owned_seen``: a pass over its objects with ``Owner.sift``),
and almost always the answer is no. Between two unloads most registries do not change:
the warnings filters, ``copyreg``'s table, the import system's finders, typing's cleanups.
So once a look finds nothing of *any* loaded livemod module's among a registry's objects,
those very objects are kept, one tuple per registry, and the next look that gathers the
same objects in the same order (an identity compare in C) skips the pass.

"Nothing of any module's" is decided by ``Owner.every_module``: names under
``livemod.mods.``, the namespaces of every loaded module (``_sysmodules``), and every file
(a code object, or a function run with globals that have no name, is never taken for
clean). That one sift also answers the unloaded module's own question: what it owns is
among what every module owns, so only those few objects are asked about again.

Ownership does not change over an object's life (its function's globals, its class's
module), and a module loaded later makes new objects, so a tuple once clean stays clean for
as long as it is the same.

What is kept must never keep anything alive: a handler the application adds may hold a
module's stream, and once the application takes the handler off again the module must be
free. So each object is kept as a weak reference; only immutable plain values (strings,
numbers, compiled patterns, and tuples of those and classes: warnings filters) are kept
as they are. A registry holding anything else that cannot be weakly referenced (a builtin
method, say) gets no clean view and is looked through every time, as before.
"""

from __future__ import annotations

import operator
import re
import threading
import weakref
from collections.abc import Callable
from itertools import repeat
from typing import Any, Final

from . import _sysmodules
from ._owned import Owner, kind

__all__ = ["remember", "seen"]


#: Immutable values that are kept as they are (they hold nothing a module could own).
_PLAIN: Final = frozenset(map(id, (str, int, float, bool, bytes, type(None), re.Pattern)))
_lock = threading.Lock()  # protects: _kept
#: registry label -> for each object last found clean there, in order, a callable that
#: gives it back (a weak reference, or the value itself for a plain one).
_kept: dict[str, tuple[Callable[[], Any], ...]] = {}


def seen(label: str, objects: list[Any]) -> bool:
    """Whether ``objects`` are, by identity and in order, what was last found clean."""
    with _lock:
        last = _kept.get(label)
    return (last is not None and len(last) == len(objects)
            and all(map(operator.is_, objects, map(operator.call, last))))


def remember(label: str, objects: list[Any], checked: list[Any] | None = None, *,
             also_clean: bool = True) -> list[Any]:
    """What of ``checked`` (default: the objects themselves) any loaded module owns, in one
    sift; if nothing, and ``also_clean`` (what the caller looked at beside them, such as
    filter patterns, was clean too), keep ``objects`` as ``label``'s clean view, else forget
    the old view. The unloaded module's own are among what is returned (it is still
    loaded while it is scrubbed), so its scrubber asks ``owns`` of those few only."""
    owned = Owner.every_module(_sysmodules.loaded_namespaces()).sift(
        objects if checked is None else checked)
    kept = list(map(_holder, objects)) if also_clean and not owned else []
    with _lock:
        if kept and not any(map(operator.is_, kept, repeat(None))):  # by identity
            _kept[label] = tuple(kept)  # type: ignore[arg-type]
        else:
            _kept.pop(label, None)
    return owned


def _holder(obj: Any) -> Callable[[], Any] | None:
    """A callable that gives ``obj`` back without keeping it alive (None: there is none)."""
    if id(type(obj)) in _PLAIN or (type(obj) is tuple and all(
            id(type(item)) in _PLAIN or kind(item, type) for item in obj)):
        return repeat(obj).__next__
    try:
        return weakref.ref(obj)
    except TypeError:
        return None
