"""Hook points, lock-free dispatch, and the read-side sections that make unload safe.

The design, and the race it guards against
------------------------------------------

A hook keeps an immutable *snapshot* of its live implementations. Publishing or unpublishing
a module builds a new snapshot and swaps it in under the host lock; the call path takes no
lock at all. For each snapshot a small dispatcher function is generated with the
implementations bound as closure variables, so calling a hook costs about what a hand-written
``[f(x) for f in impls]`` costs.

Unload must know when no call can still enter a module. Each snapshot carries a ``readers``
list used as an atomic counter (``list.append`` and ``list.pop`` are single operations on
both the GIL and the free-threaded builds). A call is a read-side section, RCU style:

1. announce: ``snap.readers.append(None)``
2. re-check: ``hook._snap is snap`` -- if not, leave and retry on the current snapshot
3. call the implementations
4. leave: ``snap.readers.pop()`` (in ``finally``)

The unloader swaps the snapshot first and only then reads the old snapshot's counter. The
seqlock-style re-check closes the window between a caller fetching the dispatcher and
announcing itself: either the caller's announcement happened before the unloader read the
counter (the unloader sees it and waits), or the unloader's swap happened before the caller's
re-check (the caller sees a new snapshot and never calls into the old one). Announcing *after*
reading the snapshot without the re-check would let a call slip into a module whose exit has
begun; the GIL would hide that on 3.11 only by luck of where threads switch.

A retired snapshot once seen with no readers can never again run an implementation (any late
arrival fails the re-check), so it is forgotten; snapshots retired with readers are kept in
``HookTable.retired`` until they drain. A module is quiescent for dispatch when no retained
snapshot that includes it has readers. That is conservative: a long call to *another* module
on the same old snapshot also delays the unload, which is the price of a call path with no
per-implementation bookkeeping.

The dispatcher is installed as ``__call__`` of a class private to each hook, so ``hook(x)``
is one Python frame, not two. Publishing sets ``hook._snap`` before the class attribute; a
caller holding either the old or the new dispatcher is handled by the re-check.

Atomicity is per hook (one swap each). A caller that reads two hooks while a module is being
published may see the first updated and not the second; all are published before ``insmod``
returns, and all are unpublished before ``rmmod`` starts to wait.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import itertools
import threading
import weakref
from collections.abc import Callable, Iterable
from types import FrameType
from typing import Any, Final, Literal, final

__all__ = ["ErrorPolicy", "Hook", "HookTable", "Impl", "dispatching_into"]

ErrorPolicy = Literal["raise", "isolate"]

#: Called as on_error(hook_name, impl, exc) when an isolated implementation raises.
ErrorSink = Callable[[str, "Impl", BaseException], None]


@final
class Impl:
    """One implementation registered on a hook by one module instance."""

    __slots__ = ("fn", "is_async", "owner", "owner_name", "priority", "seq")

    def __init__(
        self, fn: Callable[..., Any], *, owner: int, owner_name: str, priority: int, seq: int
    ) -> None:
        self.fn = fn
        self.owner = owner  # instance id, never the instance: snapshots must not keep it alive
        self.owner_name = owner_name
        self.priority = priority
        self.seq = seq
        self.is_async = inspect.iscoroutinefunction(fn)

    def sort_key(self) -> tuple[int, int]:
        # Higher priority first; equal priority in registration order (load order).
        return (-self.priority, self.seq)

    def describe(self) -> str:
        return f"{self.owner_name}:{getattr(self.fn, '__qualname__', repr(self.fn))}"


@final
class _Snapshot:
    __slots__ = ("call", "impls", "owners", "readers")

    def __init__(self, impls: tuple[Impl, ...]) -> None:
        self.impls = impls
        self.owners = frozenset(i.owner for i in impls)
        self.readers: list[None] = []
        self.call: Callable[..., list[Any]] = _empty_dispatch

    def scrub(self) -> None:
        """Drop the references to the implementations (and so to their modules).

        Only for a retired snapshot seen with no readers: a caller that still holds its
        dispatcher fails the re-check before it could reach an implementation, so nothing
        reads these again. Without this, a thread paused in a stale dispatcher keeps an
        unloaded module alive and the leak check reports it.
        """
        self.impls = ()
        self.owners = frozenset()
        held = getattr(self.call, "_livemod_fns", None)
        if held is not None:  # the loop form keeps its implementations in one list
            held[0] = ()
            return
        cells = getattr(self.call, "__closure__", None) or ()
        for name, cell in zip(self.call.__code__.co_freevars, cells, strict=True):
            if name.startswith("_f") and name != "_fail":
                cell.cell_contents = None


def _empty_dispatch(self: Hook, *args: Any, **kwargs: Any) -> list[Any]:
    return []


_TEMPLATE: Final = """\
def make(snap, _enter, _leave, _fail, {params}):
    def dispatch(self, *a, **k):
        _enter(None)
        try:
            if self._snap is not snap:
                return self._snap.call(self, *a, **k)
{body}
        finally:
            _leave()
    return dispatch
"""


def _generate(hook: Hook, snap: _Snapshot, policy: ErrorPolicy, sink: ErrorSink) -> None:
    """Build the dispatcher for ``snap`` and store it on ``snap.call``."""
    impls = snap.impls
    if not impls:
        snap.call = _empty_dispatch
        return
    if any(i.is_async for i in impls):
        owners = ", ".join(sorted({i.owner_name for i in impls if i.is_async}))
        message = (
            f"hook {hook.name!r} has coroutine implementations (from {owners}); "
            f"call it with 'await hook.acall(...)'"
        )

        def refuse(self: Hook, *args: Any, **kwargs: Any) -> list[Any]:
            raise TypeError(message)

        snap.call = refuse
        return
    # Unrolled calls pay off for the usual handful of implementations; past that, the
    # compile cost per shape and the code size outweigh a loop's few nanoseconds.
    make = _maker(len(impls), policy) if len(impls) <= _UNROLL else _loop_maker(policy)

    def fail(index: int, exc: BaseException) -> None:
        # Through ``snap``, not a captured tuple, so scrub() frees the implementations.
        sink(hook.name, snap.impls[index], exc)

    snap.call = make(snap, snap.readers.append, snap.readers.pop, fail, *(i.fn for i in impls))


_UNROLL: Final = 16

#: The file name the generated dispatchers are compiled under (how their frames are known).
_DISPATCH_FILE: Final = "<livemod hook dispatch"


def dispatching_into(frame: FrameType, owner: int) -> str | None:
    """The hook's name if ``frame`` is a dispatch whose snapshot includes ``owner``.

    A thread with such a frame is counted as a caller of the owner's hooks (it announced
    itself on that snapshot), whatever code it runs now: a ``functools.partial`` of a
    library function registered by the module has no frame of the module, yet an unload of
    the module from there would wait for itself. Only for the calling thread's own frames
    (reading ``f_locals`` of another thread's running frame is not safe).
    """
    code = frame.f_code
    generated = code.co_filename.startswith(_DISPATCH_FILE)
    if not generated and not (code.co_filename == __file__ and code.co_name in _DISPATCHERS):
        return None
    local = frame.f_locals
    snap = local.get("snap")
    if not isinstance(snap, _Snapshot) or owner not in snap.owners:
        return None
    hook = local.get("self", local.get("hook"))
    return hook.name if isinstance(hook, Hook) else "?"


def _loop_maker(policy: ErrorPolicy) -> Callable[..., Callable[..., list[Any]]]:
    def make(
        snap: _Snapshot, enter: Callable[[None], None], leave: Callable[[], object],
        fail: Callable[[int, BaseException], None], *fns: Callable[..., Any],
    ) -> Callable[..., list[Any]]:
        holder = [fns]  # a cell scrub() can empty, like the unrolled _fN ones

        def dispatch(self: Hook, *a: Any, **k: Any) -> list[Any]:
            enter(None)
            try:
                if self._snap is not snap:
                    return self._snap.call(self, *a, **k)
                if policy == "raise":
                    return [f(*a, **k) for f in holder[0]]
                out = []
                for i, f in enumerate(holder[0]):
                    try:
                        out.append(f(*a, **k))
                    except Exception as e:
                        fail(i, e)
                return out
            finally:
                leave()

        dispatch._livemod_fns = holder  # type: ignore[attr-defined]
        return dispatch

    return make


#: Functions of this file whose frames are dispatches (``snap`` among their locals).
_DISPATCHERS: Final = frozenset({"dispatch", "_acall_snapshot"})


@functools.lru_cache(maxsize=64)
def _maker(n: int, policy: ErrorPolicy) -> Callable[..., Callable[..., list[Any]]]:
    """Compile (once per shape) a factory of dispatchers for ``n`` implementations."""
    names = [f"_f{i}" for i in range(n)]
    pad = " " * 12
    if policy == "raise":
        positional = ", ".join(f"{f}(*a)" for f in names)
        keyword = ", ".join(f"{f}(*a, **k)" for f in names)
        # Calls with keywords are rarer; the positional form skips building a dict per call.
        body = f"{pad}if k:\n{pad}    return [{keyword}]\n{pad}return [{positional}]"
    else:
        lines = [f"{pad}r = []"]
        for i, f in enumerate(names):
            lines += [
                f"{pad}try:",
                f"{pad}    r.append({f}(*a, **k))",
                f"{pad}except Exception as e:",
                f"{pad}    _fail({i}, e)",
            ]
        lines.append(f"{pad}return r")
        body = "\n".join(lines)
    source = _TEMPLATE.format(params=", ".join(names), body=body)
    namespace: dict[str, Any] = {}
    exec(compile(source, f"{_DISPATCH_FILE} ({n})>", "exec"), namespace)
    maker: Callable[..., Callable[..., list[Any]]] = namespace["make"]
    return maker


class Hook:
    """A named hook point. Calling it calls every live implementation, in order.

    ``hook(*args, **kwargs)`` returns the list of results. It takes no lock. With the error
    policy ``"raise"`` (the default) the first implementation that raises stops the call and
    the exception propagates; with ``"isolate"`` a failing implementation is reported to the
    host (logged, counted against its module) and left out of the results.
    """

    __slots__ = ("__weakref__", "_loops", "_policy", "_sink", "_snap", "name")

    name: str
    _snap: _Snapshot

    def __new__(
        cls, name: str, *, policy: ErrorPolicy, sink: ErrorSink,
        loops: weakref.WeakSet[Any] | None = None,
    ) -> Hook:
        # A class of its own per hook, so its dispatcher can be ``__call__`` itself.
        own = type("Hook", (cls,), {"__slots__": (), "__module__": cls.__module__})
        return object.__new__(own)

    def __init__(
        self, name: str, *, policy: ErrorPolicy, sink: ErrorSink,
        loops: weakref.WeakSet[Any] | None = None,
    ) -> None:
        self.name = name
        # Event loops this hook was awaited from: unload looks at their tasks too.
        self._loops: weakref.WeakSet[Any] = loops if loops is not None else weakref.WeakSet()
        self._policy: ErrorPolicy = policy
        self._sink = sink
        self._snap = _Snapshot(())

    def __call__(self, *args: Any, **kwargs: Any) -> list[Any]:
        return self._snap.call(self, *args, **kwargs)

    async def acall(self, *args: Any, concurrent: bool = False, **kwargs: Any) -> list[Any]:
        """Call every implementation, awaiting coroutine ones; returns the list of results.

        Sequential by default; ``concurrent=True`` awaits them together (results stay in
        hook order). The call is in flight, for unload, until every awaitable is done, even
        while the task is suspended.
        """
        self._loops.add(asyncio.get_running_loop())
        while True:
            snap = self._snap
            snap.readers.append(None)
            try:
                if self._snap is not snap:
                    continue
                return await _acall_snapshot(self, snap, concurrent, args, kwargs)
            finally:
                snap.readers.pop()

    def implementations(self) -> tuple[str, ...]:
        """``"module:function"`` for each live implementation, in call order."""
        return tuple(i.describe() for i in self._snap.impls)

    def __len__(self) -> int:
        return len(self._snap.impls)

    def __repr__(self) -> str:
        return f"<livemod.Hook {self.name!r} ({len(self)} implementations)>"

    def _install_unlocked(self, impls: tuple[Impl, ...]) -> _Snapshot:
        """Swap in a snapshot of ``impls``; return the retired one. Caller holds the lock."""
        old = self._snap
        new = _Snapshot(impls)
        _generate(self, new, self._policy, self._sink)
        self._snap = new
        type(self).__call__ = new.call  # type: ignore[method-assign]
        return old


async def _acall_snapshot(
    hook: Hook, snap: _Snapshot, concurrent: bool, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> list[Any]:
    isolate = hook._policy == "isolate"
    if concurrent and snap.impls:
        async def one(impl: Impl) -> Any:
            result = impl.fn(*args, **kwargs)
            return await result if inspect.isawaitable(result) else result

        # Every implementation settles before acall returns or raises: leaving the read-side
        # section while a sibling still runs inside its module would let it be unloaded.
        # Under "raise", the first failure cancels the others (and waits for them).
        tasks = [asyncio.ensure_future(one(i)) for i in snap.impls]
        try:
            if not isolate:
                await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
                for task in tasks:
                    task.cancel()
            await asyncio.wait(tasks)
        finally:
            for task in tasks:  # acall itself cancelled: take the implementations down too
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        out: list[Any] = []
        for impl, task in zip(snap.impls, tasks, strict=True):
            if task.cancelled():
                continue
            error = task.exception()
            if error is None:
                out.append(task.result())
            elif isolate and isinstance(error, Exception):
                hook._sink(hook.name, impl, error)
            else:
                raise error
        return out
    results: list[Any] = []
    for impl in snap.impls:
        try:
            value = impl.fn(*args, **kwargs)
            if inspect.isawaitable(value):
                value = await value
        except Exception as exc:
            if not isolate:
                raise
            hook._sink(hook.name, impl, exc)
            continue
        results.append(value)
    return results


@final
class HookTable:
    """Every hook of one host, and the retired snapshots that may still have readers.

    Lock protects (the host's ``_lock``, passed in): 1) ``hooks``; 2) every hook's snapshot
    swap; 3) ``retired``. Reading a hook's snapshot (the call path) needs no lock.
    """

    __slots__ = ("_lock", "_policy", "_seq", "_sink", "hooks", "loops", "retired")

    def __init__(self, lock: threading.Lock, policy: ErrorPolicy, sink: ErrorSink) -> None:
        self._lock = lock
        self._policy: ErrorPolicy = policy
        self._sink = sink
        self._seq = itertools.count()
        self.hooks: dict[str, Hook] = {}
        self.loops: weakref.WeakSet[Any] = weakref.WeakSet()  # loops that awaited a hook
        self.retired: list[tuple[Hook, _Snapshot]] = []

    def get(self, name: str, policy: ErrorPolicy | None = None) -> Hook:
        hook = self.hooks.get(name)
        if hook is None:
            with self._lock:
                hook = self.hooks.get(name)
                if hook is None:
                    hook = Hook(name, policy=policy or self._policy, sink=self._sink,
                                loops=self.loops)
                    self.hooks[name] = hook
        return hook

    def next_seq(self) -> int:
        return next(self._seq)

    def publish_unlocked(self, additions: Iterable[tuple[str, Impl]]) -> None:
        """Add implementations, one snapshot swap per affected hook. Caller holds the lock."""
        by_hook: dict[str, list[Impl]] = {}
        for name, impl in additions:
            by_hook.setdefault(name, []).append(impl)
        for name, impls in by_hook.items():
            hook = self.hooks.get(name)
            if hook is None:  # not ``or``: an empty Hook is falsy (it has a __len__)
                hook = self._create_unlocked(name)
            merged = tuple(sorted((*hook._snap.impls, *impls), key=Impl.sort_key))
            self._retire_unlocked(hook, hook._install_unlocked(merged))

    def unpublish_unlocked(self, owner: int) -> list[tuple[str, Impl]]:
        """Remove every implementation of ``owner``; return them for a possible republish."""
        removed: list[tuple[str, Impl]] = []
        for hook in self.hooks.values():
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
        by_hook: dict[str, list[Impl]] = {}
        for name, impl in additions:
            by_hook.setdefault(name, []).append(impl)
        names = {h.name for h in self.hooks.values() if old in h._snap.owners} | set(by_hook)
        for name in sorted(names):
            hook = self.hooks.get(name)
            if hook is None:
                hook = self._create_unlocked(name)
            current = hook._snap.impls
            places = [i.seq for i in current if i.owner == old]
            new = by_hook.get(name, [])
            for impl, seq in zip(new, places, strict=False):
                impl.seq = seq
            kept = tuple(i for i in current if i.owner != old)
            merged = tuple(sorted((*kept, *new), key=Impl.sort_key))
            self._retire_unlocked(hook, hook._install_unlocked(merged))

    def remove_unlocked(self, hook_name: str, impl: Impl) -> None:
        """Remove one implementation (a registration undone by its module)."""
        hook = self.hooks.get(hook_name)
        if hook is None or impl not in hook._snap.impls:
            return
        kept = tuple(i for i in hook._snap.impls if i is not impl)
        self._retire_unlocked(hook, hook._install_unlocked(kept))

    def busy_hooks(self, owner: int) -> list[str]:
        """Names of hooks with a call in flight on a snapshot that includes ``owner``.

        Empty means dispatch is quiescent for ``owner``. Drained snapshots are forgotten here.
        """
        with self._lock:
            self._prune_unlocked()
            return sorted({h.name for h, s in self.retired if owner in s.owners})

    def _create_unlocked(self, name: str) -> Hook:
        hook = Hook(name, policy=self._policy, sink=self._sink, loops=self.loops)
        self.hooks[name] = hook
        return hook

    def _retire_unlocked(self, hook: Hook, snap: _Snapshot) -> None:
        # Called after the swap: a snapshot with no readers now can never call again.
        self._prune_unlocked()
        if snap.impls and snap.readers:
            self.retired.append((hook, snap))
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
