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
``HookTable.retired`` (``_hooktable``) until they drain. A module is quiescent for dispatch
when no retained snapshot that includes it has readers. That is conservative: a long call to
*another* module on the same old snapshot also delays the unload, which is the price of a
call path with no per-implementation bookkeeping.

Each snapshot gets generated dispatchers (``_dispatch`` says why and how): ``hook.call``, a
plain function with the hook's real signature when it is known; the same code as
``__call__`` of a class private to each hook, so ``hook(x)`` is one Python frame, not two;
and ``hook.acall``. Publishing sets ``hook._snap`` before the attributes; a caller holding
an old dispatcher is handled by the re-check, and then forwards to the current one *after*
leaving the old snapshot (so a kept ``hook.call`` never holds up an unload).

Specs, ``firstresult``, wrappers and historic calls (``_specs``) change only the generated
code of the hooks that use them: an undeclared hook's call path is what it was.

Atomicity is per hook (one swap each). A caller that reads two hooks while a module is being
published may see the first updated and not the second; all are published before ``insmod``
returns, and all are unpublished before ``rmmod`` starts to wait.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import threading
from collections.abc import Callable, Coroutine
from types import FrameType
from typing import Any, Final, Literal

from . import _specs
from ._dispatch import GENERIC_PARAMS, UNROLL, Plan, compile_maker
from ._snapshot import _ARGS, _IS_ASYNC, _NO_IMPLS, Impl, _Snapshot
from ._specs import Spec

__all__ = ["ErrorPolicy", "ErrorSink", "Hook", "Impl", "dispatching_into"]

ErrorPolicy = Literal["raise", "isolate"]

#: Called as on_error(hook_name, impl, exc) when an isolated implementation raises.
ErrorSink = Callable[[str, "Impl", BaseException], None]

#: One remembered ``call_historic``: (args, kwargs, result_callback).
_Historic = tuple[tuple[Any, ...], dict[str, Any], "Callable[[Any], object] | None"]


def _plan(hook: Hook, snap: _Snapshot) -> tuple[Plan, tuple[Any, ...]]:
    """The code shape of ``snap``'s dispatchers, and the defaults they bind."""
    spec = hook._spec
    plain, wraps = snap.plain, snap.wraps
    defaults: tuple[Any, ...] = ()
    if spec is not None:
        params, forward, defaults = spec.params, spec.forward, spec.defaults
        args = list(map(_ARGS, plain))
        calls = ((forward,) * len(plain) if args.count(None) == len(args)
                 else tuple(a if a is not None else forward for a in args))
        wrap_args = tuple(i.args if i.args is not None else forward for i in wraps)
    else:
        # One signature for all (the keys are equal) is the one of the first.
        uniform = snap.shape is not None and snap.shape is not _NO_IMPLS
        shape = _specs.uniform_shape([snap.impls[0].fn]) if uniform else None
        params, forward = shape if shape is not None else (GENERIC_PARAMS, GENERIC_PARAMS)
        calls = (forward,) * (1 if len(plain) > UNROLL else len(plain))  # one for all
        wrap_args = (forward,) * len(wraps)
    # A comprehension needs one argument list for all; spec'd implementations taking
    # different subsets stay unrolled (rare, and compiled once per shape).
    loop = len(plain) > UNROLL and len(set(calls)) == 1
    plan = Plan(
        params=params, forward=forward, ndefaults=len(defaults),
        calls=calls[:1] if loop else calls, wrappers=wrap_args,
        is_async=() if loop else tuple(map(_IS_ASYNC, plain)), loop=loop,
        policy=hook._policy, firstresult=spec is not None and spec.firstresult,
        sync_ok=snap.n_async == 0,
    )
    return plan, defaults


def _generate(hook: Hook, snap: _Snapshot) -> None:
    """Build the dispatchers for ``snap`` (``call``, ``__call__``, ``acall``)."""
    plan, defaults = _plan(hook, snap)
    make = compile_maker(plan)
    sink = hook._sink

    def fail(index: int, exc: BaseException) -> None:
        # Through ``snap``, not a captured tuple, so scrub() frees the implementations.
        sink(hook.name, snap.plain[index], exc)

    fns = snap.fns
    call, dunder, acall = make(
        hook, snap, snap.readers.append, snap.readers.pop, fail, _specs.run_wrapped,
        _specs.arun_wrapped, _acall_concurrent, [fns] if plan.loop else None,
        *defaults, *(() if plan.loop else fns), *(i.fn for i in snap.wraps),
    )
    # Even with no implementations: a kept ``hook.call`` must forward once there are some.
    snap.call, snap.dunder, snap.acall = call, dunder, acall


#: The file name the generated dispatchers are compiled under (how their frames are known;
#: ``_dispatch`` names them so).
_DISPATCH_FILE: Final = "<livemod hook dispatch"
#: Functions of this file whose frames are read-side sections (``snap`` among their locals).
_DISPATCHERS: Final = frozenset({"_acall_concurrent", "_gather", "_replay"})


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
    # Generated dispatchers hold them as free variables named _lm_*.
    snap = local.get("_lm_snap", local.get("snap"))
    if not isinstance(snap, _Snapshot) or owner not in snap.owners:
        return None
    hook = local.get("_lm_hook", local.get("self", local.get("hook")))
    return hook.name if isinstance(hook, Hook) else "?"


class Hook:
    """A named hook point. Calling it calls every live implementation, in order.

    ``hook(*args, **kwargs)`` returns the list of results (for a spec with
    ``firstresult=True``: the first result that is not None). It takes no lock. With the
    error policy ``"raise"`` (the default) the first implementation that raises stops the call
    and the exception propagates; with ``"isolate"`` a failing implementation is reported to
    the host (logged, counted against its module) and left out of the results.

    Attributes:
        call: the current dispatcher as a plain function (``hook.call(x)`` is ``hook(x)``,
            cheaper on CPython 3.12+). A caller may keep it: once the hook changes, a kept
            one forwards to the current dispatcher.
        acall: ``await hook.acall(*args, concurrent=False, **kwargs)`` calls every
            implementation, awaiting coroutine ones; sequential by default, ``concurrent``
            awaits them together (results stay in hook order). The call is in flight, for
            unload, until every awaitable is done, even while the task is suspended.
    """

    __slots__ = ("__weakref__", "_history", "_lock", "_policy", "_sink", "_snap", "_spec",
                 "acall", "call", "name")

    name: str
    _snap: _Snapshot
    call: Callable[..., Any]
    acall: Callable[..., Coroutine[Any, Any, Any]]

    def __new__(
        cls, name: str, *, policy: ErrorPolicy, sink: ErrorSink,
        lock: threading.Lock | None = None,
    ) -> Hook:
        # A class of its own per hook, so its dispatcher can be ``__call__`` itself.
        own = type("Hook", (cls,), {"__slots__": (), "__module__": cls.__module__})
        return object.__new__(own)

    def __init__(
        self, name: str, *, policy: ErrorPolicy, sink: ErrorSink,
        lock: threading.Lock | None = None,
    ) -> None:
        self.name = name
        self._lock = lock if lock is not None else threading.Lock()
        self._policy: ErrorPolicy = policy
        self._sink = sink
        self._spec: Spec | None = None
        self._history: list[_Historic] = []
        self._snap = _Snapshot(())
        self._install_unlocked(())

    def __call__(self, *args: Any, **kwargs: Any) -> Any:  # replaced per snapshot
        return self.call(*args, **kwargs)

    @property
    def spec(self) -> Spec | None:
        """The hook's spec (``host.spec``), or None for an undeclared hook."""
        return self._spec

    def call_historic(
        self, *args: Any, result_callback: Callable[[Any], object] | None = None,
        **kwargs: Any,
    ) -> None:
        """Call every implementation now, and remember the call for those published later.

        Each ordinary implementation (not a wrapper) gets each remembered call exactly once:
        the ones live now here, the ones published later when they are published (their
        failures there are reported as under ``errors="isolate"``: their loader has already
        returned). ``result_callback`` receives each result that is not None.
        """
        entry: _Historic = (args, kwargs, result_callback)
        with self._lock:
            self._history.append(entry)
            targets = self._snap.plain
            for impl in targets:
                impl.hist = len(self._history)
        for impl in targets:
            self._replay(impl, [entry], isolate=self._policy == "isolate")

    def implementations(self) -> tuple[str, ...]:
        """``"module:function"`` for each live implementation, in call order."""
        return tuple(i.describe() for i in self._snap.impls)

    def describe(self) -> dict[str, Any]:
        """The hook's spec and implementations, for ``livemod hooks`` (JSON-friendly)."""
        spec = self._spec
        return {
            "name": self.name,
            "spec": None if spec is None else {
                "signature": spec.signature, "firstresult": spec.firstresult, "doc": spec.doc,
            },
            "implementations": [
                {"impl": i.describe(), "priority": i.priority, "wrapper": i.wrapper,
                 "async": i.is_async} for i in self._snap.impls
            ],
            "historic": len(self._history),
        }

    def __len__(self) -> int:
        return len(self._snap.impls)

    def __repr__(self) -> str:
        return f"<livemod.Hook {self.name!r} ({len(self)} implementations)>"

    def _install_unlocked(
        self, impls: tuple[Impl, ...],
        grown: tuple[_Snapshot, tuple[Any, ...], list[Impl]] | None = None,
    ) -> _Snapshot:
        """Swap in a snapshot of ``impls`` (``grown``: see ``_Snapshot``); return the retired
        one. Caller holds the lock."""
        old = self._snap
        new = _Snapshot(impls, grown)
        _generate(self, new)
        # ``_snap`` first: a caller that fetched an old dispatcher fails its re-check.
        self._snap = new
        self.call = new.call
        self.acall = new.acall
        type(self).__call__ = new.dunder  # type: ignore[method-assign]
        return old

    def _replay(self, impl: Impl, entries: list[_Historic], *, isolate: bool) -> None:
        """Give ``impl`` the remembered calls ``entries``, inside a read-side section."""
        while True:
            snap = self._snap
            snap.readers.append(None)
            try:
                if self._snap is not snap:
                    continue
                if impl not in snap.plain:
                    return  # unpublished meanwhile: its module is going
                for args, kwargs, callback in entries:
                    try:
                        if impl.is_async:
                            raise TypeError(f"hook {self.name!r}: call_historic cannot await "
                                            f"the coroutine implementation {impl.describe()}")
                        result = _call_impl(self, impl, args, kwargs)
                    except Exception as exc:
                        if not isolate:
                            raise
                        self._sink(self.name, impl, exc)
                        continue
                    if callback is not None and result is not None:
                        callback(result)
                return
            finally:
                snap.readers.pop()


def _call_impl(hook: Hook, impl: Impl, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Call one implementation the slow way (historic and concurrent calls)."""
    spec = hook._spec
    if spec is None or impl.args is None:
        return impl.fn(*args, **kwargs)
    bound = spec.bind(args, kwargs)
    pos, kw = [], {}
    for item in filter(None, impl.args.split(", ")):
        name, _, value = item.partition("=")
        if value:
            kw[name] = bound[value]
        else:
            pos.append(bound[name])
    return impl.fn(*pos, **kw)


async def _acall_concurrent(hook: Hook, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``acall(..., concurrent=True)``: every implementation awaited together."""
    while True:
        snap = hook._snap
        snap.readers.append(None)
        try:
            if hook._snap is not snap:
                continue
            if not snap.wraps:
                return await _gather(hook, snap, args, kwargs)
            gens = tuple(_call_impl(hook, w, args, kwargs) for w in snap.wraps)
            inner = functools.partial(_gather, hook, snap, args, kwargs)
            return await _specs.arun_wrapped(hook, snap.wraps, gens, inner)
        finally:
            snap.readers.pop()


async def _gather(hook: Hook, snap: _Snapshot, args: tuple[Any, ...],
                  kwargs: dict[str, Any]) -> Any:
    isolate = hook._policy == "isolate"
    first = hook._spec is not None and hook._spec.firstresult

    async def one(impl: Impl) -> Any:
        result = _call_impl(hook, impl, args, kwargs)
        return await result if inspect.isawaitable(result) else result

    # Every implementation settles before acall returns or raises: leaving the read-side
    # section while a sibling still runs inside its module would let it be unloaded.
    # Under "raise", the first failure cancels the others (and waits for them).
    tasks = [asyncio.ensure_future(one(i)) for i in snap.plain]
    try:
        if tasks and not isolate:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in tasks:
                task.cancel()
        if tasks:
            await asyncio.wait(tasks)
    finally:
        for task in tasks:  # acall itself cancelled: take the implementations down too
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    out: list[Any] = []
    for impl, task in zip(snap.plain, tasks, strict=True):
        if task.cancelled():
            continue
        error = task.exception()
        if error is None:
            out.append(task.result())
        elif isolate and isinstance(error, Exception):
            hook._sink(hook.name, impl, error)
        else:
            raise error
    if first:
        return next((r for r in out if r is not None), None)
    return out
