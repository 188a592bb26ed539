"""The hooks of one host: the table, publishing and unpublishing, retired snapshots.

Every snapshot swap happens here, under the host lock (``_hooks`` has the read side and the
handshake it relies on). A snapshot swapped out while calls are still in it is *retired*:
kept until its readers drain. Historic calls are claimed here too, under the same lock, so
that each remembered call reaches each implementation exactly once.
"""

from __future__ import annotations

import bisect
import itertools
import threading
from collections.abc import Callable, Iterable
from typing import Any, TypeVar, final

from . import _specs
from ._hooks import ErrorPolicy, ErrorSink, Hook, Impl, _Historic
from ._snapshot import _cells, _Snapshot, set_cell
from ._specs import Spec
from .errors import SpecError

__all__ = ["HookTable"]

_Fn = TypeVar("_Fn", bound=Callable[..., Any])  # a spec function, returned as it came


@final
class HookTable:
    """Every hook of one host, and the retired snapshots that may still have readers.

    Lock protects (the host's ``_lock``, passed in): 1) ``hooks``; 2) every hook's snapshot
    swap, spec and history; 3) ``retired``; 4) ``_replays``. Reading a hook's snapshot (the
    call path) needs no lock.
    """

    __slots__ = ("_lock", "_policy", "_replays", "_seq", "_sink", "_waiters", "_where", "hooks",
                 "retired")

    def __init__(self, lock: threading.Lock, policy: ErrorPolicy, sink: ErrorSink) -> None:
        self._lock = lock
        self._policy: ErrorPolicy = policy
        self._sink = sink
        self._seq = itertools.count()
        self.hooks: dict[str, Hook] = {}
        self.retired: list[tuple[Hook, _Snapshot]] = []
        self._replays: list[tuple[Hook, Impl, list[_Historic]]] = []
        # Queues of unloads waiting for retired snapshots to drain (changed under the lock;
        # read by late readers without it, as a copy).
        self._waiters: list[Any] = []
        # Owner -> the hooks it may have implementations on (a superset: a removed one may
        # still be named), so an unload or upgrade looks at its own hooks, not at every hook
        # of the host (which made both grow with the host's hook count).
        self._where: dict[object, tuple[str, ...]] = {}

    def add_waiter(self, wakeups: Any) -> None:
        """Put ``None`` on ``wakeups`` whenever a retired snapshot's last reader leaves."""
        with self._lock:
            self._waiters.append(wakeups)

    def remove_waiter(self, wakeups: Any) -> None:
        with self._lock:
            if wakeups in self._waiters:
                self._waiters.remove(wakeups)

    def get(self, name: str, policy: ErrorPolicy | None = None) -> Hook:
        hook = self.hooks.get(name)
        if hook is None:
            with self._lock:
                hook = self.hooks.get(name)
                if hook is None:
                    hook = self._create_unlocked(name, policy)
        return hook

    def next_seq(self) -> int:
        return next(self._seq)

    def declare(self, name: str, fn: Callable[..., Any], firstresult: bool) -> Spec:
        """Give hook ``name`` the spec ``fn`` (``host.spec``).

        Raises:
            SpecError: the hook has another spec already, or a live implementation does not
                fit this one (the hook is left as it was).
        """
        spec = Spec(name, fn, firstresult)
        with self._lock:
            hook = self.hooks.get(name)
            if hook is None:
                hook = self._create_unlocked(name, None)
            if hook._spec is not None:
                if hook._spec.fn is fn and hook._spec.firstresult == firstresult:
                    return hook._spec
                raise SpecError(f"hook {name!r} already has the spec "
                                f"{hook._spec.fn.__qualname__}{hook._spec.signature}; "
                                f"declare a hook's spec once", hook=name)
            plans = [(i, spec.args_for(i.fn, i.owner_name)) for i in hook._snap.impls]
            for impl, args in plans:
                impl.args = args
            hook._spec = spec
            self._retire_unlocked(hook, hook._install_unlocked(hook._snap.impls))
        return spec

    def spec(self, name: str, *, firstresult: bool = False) -> Callable[[_Fn], _Fn]:
        """``host.spec``: a decorator declaring the decorated function hook ``name``'s spec.

        Its signature is the hook's and its docstring documents it. ``add()`` then checks
        each implementation against it; an implementation may take fewer of its parameters
        (it is called by name with those). With ``firstresult``, a call returns the first
        result that is not None instead of the list.

        Raises:
            SpecError: the spec has ``*args``/``**kwargs`` or a reserved name, the hook has
                another spec, or a live implementation does not fit it.
        """
        def declare(fn: _Fn) -> _Fn:
            self.declare(name, fn, firstresult)
            return fn

        return declare

    def describe(self) -> list[dict[str, Any]]:
        """``host.hooks()``: every hook with a spec or an implementation, sorted by name."""
        with self._lock:
            hooks = sorted(self.hooks.items())
        return [h.describe() for _, h in hooks if len(h) or h.spec is not None]

    def check_unlocked(self, name: str, impl: Impl) -> None:
        """Check ``impl`` against hook ``name``'s spec (at ``add()``); raises SpecError."""
        if impl.wrapper:
            _specs.check_wrapper(name, impl.fn, impl.owner_name)
        hook = self.hooks.get(name)
        spec = hook._spec if hook is not None else None
        if spec is not None:
            impl.args = spec.args_for(impl.fn, impl.owner_name)

    def publish_unlocked(self, additions: Iterable[tuple[str, Impl]]) -> None:
        """Add implementations, one snapshot swap per affected hook. Caller holds the lock."""
        for name, impls in _by_hook(additions).items():
            hook = self.hooks.get(name)
            if hook is None:  # not ``or``: an empty Hook is falsy (it has a __len__)
                hook = self._create_unlocked(name, None)
            self._note_unlocked(name, impls)
            snap = hook._snap
            if snap.impls and not snap.wraps and not any(i.wrapper for i in impls):
                merged, fns = _insert_with(snap.impls, snap.fns, impls)
                retired = hook._install_unlocked(merged, (snap, fns, impls))
            else:
                retired = hook._install_unlocked(_insert(snap.impls, impls))
            self._retire_unlocked(hook, retired)
            self._claim_history_unlocked(hook, impls)

    def unpublish_unlocked(self, owner: int) -> list[tuple[str, Impl]]:
        """Remove every implementation of ``owner``; return them for a possible republish."""
        removed: list[tuple[str, Impl]] = []
        for name in sorted(self._where.pop(owner, ())):
            hook = self.hooks[name]
            snap = hook._snap
            if owner not in snap.owners:
                continue
            removed += [(hook.name, i) for i in snap.impls if i.owner == owner]
            kept = tuple(i for i in snap.impls if i.owner != owner)
            self._retire_unlocked(hook, hook._install_unlocked(kept))
        return removed

    def switch_unlocked(self, old: int, additions: Iterable[tuple[str, Impl]]) -> None:
        """Replace every implementation of ``old`` by ``additions`` (an upgrade).

        One swap per hook, so a call on that hook sees the old version's implementations or
        the new one's, never both or neither. On each hook the new implementations take the
        old ones' places (their sequence numbers), in order; extra ones go last.
        """
        by_hook = _by_hook(additions)
        names = {n for n in self._where.pop(old, ()) if old in self.hooks[n]._snap.owners}
        for name in sorted(names | set(by_hook)):
            hook = self.hooks.get(name)
            if hook is None:
                hook = self._create_unlocked(name, None)
            new = by_hook.get(name, [])
            self._note_unlocked(name, new)
            current = hook._snap.impls
            places = [i.seq for i in current if i.owner == old]
            for impl, seq in zip(new, places, strict=False):
                impl.seq = seq
            kept = tuple(i for i in current if i.owner != old)
            self._retire_unlocked(hook, hook._install_unlocked(_insert(kept, new)))
            self._claim_history_unlocked(hook, new)

    def remove_unlocked(self, hook_name: str, impl: Impl) -> None:
        """Remove one implementation (a registration undone by its module)."""
        hook = self.hooks.get(hook_name)
        if hook is None or impl not in hook._snap.impls:
            return
        kept = tuple(i for i in hook._snap.impls if i is not impl)
        self._retire_unlocked(hook, hook._install_unlocked(kept))

    def run_replays(self) -> None:
        """Give newly published implementations the remembered historic calls.

        Called by whoever published, after releasing the lock (implementations run here).
        """
        with self._lock:
            todo, self._replays = self._replays, []
        for hook, impl, entries in todo:
            hook._replay(impl, entries, isolate=True)

    def busy_hooks(self, owner: int) -> list[str]:
        """Names of hooks with a call in flight on a snapshot that includes ``owner``.

        Empty means dispatch is quiescent for ``owner``. Drained snapshots are forgotten here.
        """
        with self._lock:
            self._prune_unlocked()
            return sorted({h.name for h, s in self.retired if owner in s.owners})

    def _create_unlocked(self, name: str, policy: ErrorPolicy | None) -> Hook:
        hook = Hook(name, policy=policy or self._policy, sink=self._sink, lock=self._lock)
        self.hooks[name] = hook
        return hook

    def _note_unlocked(self, name: str, impls: list[Impl]) -> None:
        for impl in impls:
            where = self._where.get(impl.owner, ())
            if name not in where:  # a tuple: a module is on a few hooks (a set is 216 B)
                self._where[impl.owner] = (*where, name)

    def _claim_history_unlocked(self, hook: Hook, impls: list[Impl]) -> None:
        # Under the lock, like call_historic's claim: each remembered call reaches each
        # implementation exactly once, whichever of the two comes first.
        history = hook._history
        for impl in impls:
            if impl.hist < len(history) and not impl.wrapper:
                self._replays.append((hook, impl, history[impl.hist:]))
            impl.hist = len(history)

    def _retire_unlocked(self, hook: Hook, snap: _Snapshot) -> None:
        # Called after the swap: a snapshot with no readers now can never call again.
        self._prune_unlocked()
        if snap.impls and snap.readers:
            self.retired.append((hook, snap))
            _arm_wakeup(snap, self._waiters)
        else:
            snap.scrub()

    def _prune_unlocked(self) -> None:
        kept = []
        for hook, snap in self.retired:
            if snap.readers:
                kept.append((hook, snap))
            else:
                snap.scrub()
        self.retired = kept


def _arm_wakeup(snap: _Snapshot, waiters: list[Any]) -> None:
    """Make the last reader of the retired ``snap`` wake the waiting unloads.

    The dispatchers read their ``_lm_leave`` cell when they leave, so swapping the cell makes
    every reader that leaves from now on run this: only late readers of a retired snapshot
    pay, never the hot path. A reader that had already fetched the old ``list.pop`` leaves
    without waking anyone; the unload's bounded poll covers that.
    """
    readers = snap.readers
    pop = readers.pop

    def leave() -> None:
        pop()
        if not readers:
            for wakeups in tuple(waiters):
                wakeups.put(None)

    for name, cell in _cells(snap):
        if name == "_lm_leave":
            set_cell(cell, leave)  # not cell_contents: see set_cell


def _by_hook(additions: Iterable[tuple[str, Impl]]) -> dict[str, list[Impl]]:
    by_hook: dict[str, list[Impl]] = {}
    for name, impl in additions:
        by_hook.setdefault(name, []).append(impl)
    return by_hook


def _insert_with(current: tuple[Impl, ...], fns: tuple[Any, ...],
                 new: list[Impl]) -> tuple[tuple[Impl, ...], tuple[Any, ...]]:
    """``_insert``, and each new implementation's function inserted at the same place in
    ``fns`` (the functions of ``current``): copies of the two, not a pass over all."""
    merged, functions = list(current), list(fns)
    for impl in new:
        at = bisect.bisect_right(merged, impl.sort_key(), key=Impl.sort_key)
        merged.insert(at, impl)
        functions.insert(at, impl.fn)
    return tuple(merged), tuple(functions)


def _insert(current: tuple[Impl, ...], new: list[Impl]) -> tuple[Impl, ...]:
    """``current`` (sorted) with ``new`` inserted in order, without sorting it all again."""
    if not current:
        return tuple(sorted(new, key=Impl.sort_key))
    merged = list(current)
    for impl in new:
        bisect.insort(merged, impl, key=Impl.sort_key)
    return tuple(merged)

