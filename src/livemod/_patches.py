"""Attributes of installed modules that a module's code replaced while it loaded, put back at
unload.

typing_extensions replaces ``typing._check_generic``, ``_collect_type_vars`` and
``_collect_parameters`` with functions of its own when it is imported. Once it is unloaded,
typing still calls them: code of a module that is gone runs on, and it holds the whole
unloaded module alive (the leak check finds typing_extensions held by "global
'_check_generic' of module typing"). What a user expects of an unload is what removing a
monkeypatch does: typing gets its own functions back.

Python has no hook on a module attribute being set. But a module's code reaches an installed
module by importing it, and every import statement it runs goes through its own
``__import__`` (``_wiring``). So the first time its code imports an installed module while
it loads (the module named, its parent packages, and submodules named in a ``from ...
import``), a shallow copy of that module's namespace is taken. When the load is done (body
and init), each copy is compared with the namespace by identity; an entry that changed is
kept -- key, value before, value the load left -- if the value the load left is the
module's own (``_owned.Owner``: its function, class, an instance of its class, a bound
method or partial of those), and the copies are dropped. At unload such an entry is put back
(deleted, if the key was new) only if it still holds the value the load left: someone who
replaced it since keeps theirs. A value the standard library put there during the load (a
cache built lazily) is not the module's and stays.

An upgrade loads v2 beside v1, so v2's copy already holds v1's replacement, and v2 keeps it as
"the value before". When v1 is unloaded, its entry is no longer current, and whoever kept
v1's value as theirs to put back (v2) is given v1's own "before" instead: v2's unload will
put back typing's function, and nothing keeps v1 alive.

Not covered: a replacement made after the load (by a function called later) -- what it
replaced is unknown by then, and the leak report names the holder; attributes of classes
(``ssl.SSLContext.x = ...``) and of objects reached without importing their module. The
copies cost one dict copy per installed module imported, during the load only.
"""

from __future__ import annotations

import operator
import sys
import threading
import weakref
from collections.abc import Callable, Sequence
from itertools import compress, repeat
from types import ModuleType
from typing import Any, Final, final

__all__ = ["Patches"]

_MISSING: Final = object()  # the key was not there before the load

_lock = threading.Lock()  # protects: the changes of every Patches, _live
# protects: every Patches' _copies (the module's threads import too). One for all: a lock
# each was ~90 bytes a module, and copies are taken only while a module loads. Reentrant:
# a copy's allocation can run a finalizer that imports, on the same thread.
_copies_lock = threading.RLock()
_live: weakref.WeakSet[Patches] = weakref.WeakSet()  # every Patches with changes kept


@final
class Patches:
    """What one module's load did to installed modules' namespaces."""

    __slots__ = ("__weakref__", "_copies", "changes")

    def __init__(self) -> None:
        # While it loads: module name -> (its namespace, a copy taken at the first import).
        self._copies: dict[str, tuple[dict[str, Any], dict[str, Any]]] | None = {}
        # After: (module name, namespace, key, value before or _MISSING, value left).
        self.changes: Sequence[tuple[str, dict[str, Any], str, Any, Any]] = ()

    def note(self, name: str, fromlist: Sequence[str] | None) -> None:
        """An import of installed module ``name`` by the module's code has run."""
        copies = self._copies
        if copies is None:
            return  # loaded: later imports are not watched (one attribute read)
        names = [name[:i] for i, c in enumerate(name) if c == "."] + [name]
        for item in fromlist or ():
            if type(item) is str and item != "*":
                names.append(f"{name}.{item}")
        with _copies_lock:
            if self._copies is None:
                return
            for full in names:
                if full in self._copies or full.partition(".")[0] == "livemod":
                    continue
                module = sys.modules.get(full)
                if type(module) is ModuleType:  # a plain module: its __dict__ is ModuleType's
                    ns = module.__dict__
                    self._copies[full] = (ns, dict(ns))

    def settle(self, owns: Callable[[object], bool]) -> None:
        """The load is done: keep what it replaced with the module's own objects."""
        with _copies_lock:
            copies, self._copies = self._copies, None
        changes = []
        for name, (ns, before) in (copies or {}).items():
            now = ns.copy()  # one consistent view (the module's threads may be running)
            for key in _changed(now, before):
                left = now[key]
                if owns(left):
                    changes.append((name, ns, key, before.get(key, _MISSING), left))
        if changes:
            with _lock:
                self.changes = [*self.changes, *changes]
                _live.add(self)

    def restore(self, owns: Callable[[object], bool]) -> list[str]:
        """Put back what the load replaced, where it still holds the module's value (at
        unload, or after a failed load); return what was put back, in words."""
        if self._copies is not None:
            self.settle(owns)  # a load that failed never settled
        done = []
        with _lock:
            changes, self.changes = self.changes, ()
            _live.discard(self)
            for name, ns, key, prior, left in changes:
                if dict.get(ns, key, _MISSING) is not left:
                    _splice(ns, key, left, prior)  # replaced since: theirs now
                elif prior is _MISSING:
                    ns.pop(key, None)
                    done.append(f"{name}.{key} (added by the module) removed")
                else:
                    ns[key] = prior
                    done.append(f"{name}.{key} put back (the module had replaced it)")
        return done



def _changed(now: dict[Any, Any], before: dict[str, Any]) -> list[str]:
    """The string keys of ``now`` whose value is not, by identity, the one in ``before``
    (or that ``before`` lacks). In C-level passes when every key is an exact string -- an
    installed module has hundreds, and this runs for each one a load imported -- else one
    by one, never hashing or comparing a key of another type (a module's own could run)."""
    if all(map(operator.is_, map(type, now), repeat(str))):
        priors = map(before.get, now, repeat(_MISSING))
        return list(compress(now, map(operator.is_not, priors, now.values())))
    return [k for k, v in now.items() if type(k) is str and before.get(k, _MISSING) is not v]


def _splice(ns: dict[str, Any], key: str, gone: Any, prior: Any) -> None:
    """Whoever would put back ``gone`` (replaced over it: a later version) puts back
    ``prior`` instead. Caller holds ``_lock``."""
    for other in list(_live):
        changes = other.changes
        assert isinstance(changes, list)  # one in _live has kept changes: settle's list
        for i, (name, ns2, key2, prior2, left2) in enumerate(changes):
            if ns2 is ns and key2 == key and prior2 is gone:
                changes[i] = (name, ns2, key2, prior, left2)
