"""ModuleContext: what a module's ``init`` receives, and the resources it manages.

Everything taken through the context pushes its own undo onto the instance's managed stack
the moment it is taken, so a failed init and an unload undo the same things in the same
(reverse) order, and a module author never writes cleanup for them. Registrations made while
the module is COMING are staged and published together when init returns; made while LIVE,
they are published at once; while GOING they are refused.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import inspect
import itertools
import logging
import sys
import threading
import weakref
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from typing import TYPE_CHECKING, Any, TypeVar, final

from ._aio import on_loop as _on_loop
from ._globals import GlobalsMixin
from ._hooks import Impl
from ._instance import Instance, ModuleIdentity
from ._quiesce import describe_frame, note_managed
from ._state import State
from .errors import ModuleGoing

if TYPE_CHECKING:
    from ._registrar import Registrar

__all__ = ["HookHandle", "ModuleContext", "Registration", "Timer"]

T = TypeVar("T")
_pin_tokens = itertools.count(1)
# protects: the creation of each ModuleContext._pin_refs (reentrant: shared by every module,
# and an allocation under it can run a finalizer that pins, on the same thread)
_pin_refs_lock = threading.RLock()


def _caller() -> str:
    frame = sys._getframe(2)
    try:
        return describe_frame(frame)
    finally:
        del frame


@final
class Registration:
    """One implementation on one hook; ``remove()`` takes it off early (idempotent)."""

    __slots__ = ("_remove", "hook", "impl")

    def __init__(self, hook: str, impl: Impl, remove: Callable[[], None]) -> None:
        self.hook = hook
        self.impl = impl
        self._remove = remove

    def remove(self) -> None:
        self._remove()

    def __repr__(self) -> str:
        return f"<livemod.Registration {self.impl.describe()} on {self.hook!r}>"


@final
class HookHandle:
    """A hook point seen from inside a module: add implementations, or call it."""

    __slots__ = ("_ctx", "name")

    def __init__(self, ctx: ModuleContext, name: str) -> None:
        self._ctx = ctx
        self.name = name

    def add(
        self, fn: Callable[..., Any], *, priority: int = 0, wrapper: bool = False
    ) -> Registration:
        """Register ``fn`` on this hook (managed: undone automatically).

        Args:
            fn: any callable; a coroutine function makes the hook async-only.
            priority: higher runs earlier; equal priorities run in load order.
            wrapper: ``fn`` is a generator wrapped around the other implementations: its
                code before ``result = yield`` runs first, the yield gives it the result (or
                raises their exception), and what it returns is the hook's result.

        Raises:
            SpecError: ``fn`` does not fit the hook's spec (a parameter the spec does not
                have), or a wrapper is not a generator function.
        """
        if not callable(fn):
            raise TypeError(f"hook {self.name!r}: {fn!r} is not callable")
        impl, remove = self._ctx._registrar.register(
            self._ctx._inst, self.name, fn, priority, wrapper
        )
        return Registration(self.name, impl, remove)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._ctx._registrar.hook(self.name)(*args, **kwargs)

    async def acall(self, *args: Any, **kwargs: Any) -> Any:
        return await self._ctx._registrar.hook(self.name).acall(*args, **kwargs)


@final
class Timer:
    """A managed timer (``call_later`` / ``every``); ``cancel()`` stops it early."""

    __slots__ = ("_cancel", "_cancelled")

    def __init__(self) -> None:
        self._cancelled = threading.Event()
        self._cancel: Callable[[], None] = lambda: None

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def cancel(self) -> None:
        self._cancelled.set()
        self._cancel()


@final
class ModuleContext(ModuleIdentity, GlobalsMixin):
    """What ``init(mod)`` and ``exit(mod)`` receive.

    Attributes:
        name, version, path: the module's identity.
        params: typed, validated parameters (``mod.params.greeting``).
        log: a logger named ``livemod.mods.<name>``.
        stopping: a ``threading.Event`` set when the module starts going down; managed
            threads loop on ``while not mod.stopping.wait(interval)``.
        handover_state: what the previous version handed over during an upgrade, else None.
    """

    __slots__ = ("__weakref__", "_inst", "_log", "_pin_refs", "_registrar", "handover_state")

    def __init__(self, registrar: Registrar, inst: Instance) -> None:
        self._registrar = registrar
        self._inst = inst
        self._pin_refs: dict[int, weakref.ref[Any]] | None = None  # made by the first pin
        self.handover_state: object = None
        self._log: logging.Logger | None = None

    @property
    def log(self) -> logging.Logger:
        # Looked up on first use: getLogger takes logging's lock and makes a Logger that
        # logging keeps for good, which most modules never ask for.
        log = self._log
        if log is None:
            log = self._log = logging.getLogger(f"livemod.mods.{self._inst.name}")
        return log

    @property
    def stopping(self) -> threading.Event:
        return self._inst.stopping

    def hook(self, name: str) -> HookHandle:
        """The hook point ``name`` (created on first use), to add implementations to."""
        return HookHandle(self, name)

    def export(self, name: str, obj: object) -> None:
        """Offer ``obj`` to other modules as ``require(<this module>).<name>``."""
        if not name.isidentifier():
            raise ValueError(f"module {self.name!r}: export name {name!r} is not an identifier")
        self._registrar.export(self._inst, name, obj)

    def require(self, name: str) -> Any:
        """The exports of module ``name`` as attributes; records "``name`` used by us".

        Raises:
            DependencyError: ``name`` is not loaded.
            ModuleGoing: ``name`` is being unloaded.
        """
        return self._registrar.require(self._inst, name)

    def on_param(self, fn: Callable[[str, object], object]) -> Callable[[str, object], object]:
        """Call ``fn(key, value)`` when an operator sets a writable parameter.

        Raising refuses the new value (the old one is kept and the operator told why).
        Reads of ``mod.params`` see the new value from then on.
        """
        self._check_open("watch parameters")
        callbacks = self._inst.own_list("param_callbacks")
        callbacks.append(fn)
        self._inst.undo.push("param callback", lambda: callbacks.remove(fn))
        return fn

    def on_exit(self, fn: Callable[[], object]) -> Callable[[], object]:
        """Run ``fn`` at unload (and after a failed init), in reverse order of registration."""
        self._check_open("register an exit callback")
        self._inst.undo.push(f"on_exit {getattr(fn, '__qualname__', fn)!r}", fn)
        return fn

    def thread(
        self,
        target: Callable[..., object],
        *args: Any,
        name: str | None = None,
        join_timeout: float = 5.0,
        **kwargs: Any,
    ) -> threading.Thread:
        """A managed daemon thread running ``target(*args, **kwargs)``.

        It starts when the module goes LIVE (at once if it already is), so a failed init
        never ran it. At unload ``mod.stopping`` is set before ``exit`` runs, and the thread
        is joined afterwards for up to ``join_timeout`` seconds; one that will not stop is
        reported and taints the host.
        """
        self._check_open("start a thread")
        inst = self._inst
        label = name or f"{inst.name}:{getattr(target, '__name__', 'thread')}"
        thread = threading.Thread(target=target, args=args, kwargs=kwargs, name=label, daemon=True)

        def start() -> None:
            inst.own_list("threads").append(thread)
            note_managed(thread, lambda: inst.namespace_ids)
            thread.start()

        def join() -> None:
            inst.stopping.set()
            if thread.ident is None:
                return
            thread.join(join_timeout)
            if not thread.is_alive():
                inst.own_list("threads").remove(thread)
            else:
                self._registrar.taint(
                    "thread-not-stopped", inst.name,
                    f"thread {label!r} did not stop within {join_timeout:g}s of unload",
                )

        inst.undo.push(f"thread {label!r}", join)
        self._registrar.start_when_live(inst, start)
        return thread

    def pin(self, obj: object, what: str | None = None) -> Callable[[], None]:
        """Keep the module from finishing an unload while ``obj`` is alive.

        Returns a function that drops the pin early. ``obj`` must support weak references.
        """
        self._check_open("pin an object")
        inst, wake = self._inst, self._inst.wakeups.put
        token = next(_pin_tokens)
        desc = what or f"pin on {type(obj).__qualname__} object (taken at {_caller()})"
        refs = self._pin_refs
        if refs is None:
            with _pin_refs_lock:  # two threads' first pins must share one dict
                made: dict[int, weakref.ref[Any]] = {}
                refs = self._pin_refs  # (a finalizer run by {} may have pinned meanwhile)
                if refs is None:
                    refs = self._pin_refs = made

        def released(_ref: object = None) -> None:
            # May run inside garbage collection on any thread: single dict operations and a
            # reentrant-safe SimpleQueue.put only -- never the host lock.
            if inst.pins.pop(token, None) is not None:
                refs.pop(token, None)
                wake(None)

        try:
            refs[token] = weakref.ref(obj, released)
        except TypeError:
            raise TypeError(
                f"module {self.name!r}: cannot pin a {type(obj).__qualname__} object: "
                f"it does not support weak references (pin an object that does, or use a hold)"
            ) from None
        inst.pins[token] = desc
        return released

    def create_task(
        self, coro: Coroutine[Any, Any, T], *, name: str | None = None
    ) -> asyncio.Task[T]:
        """A managed asyncio task on the host's event loop; cancelled and awaited at unload.

        Created at once (an async ``init`` may await it). Needs a host used from a running
        loop (``async with livemod.Host()`` / ``await host.ainsmod``).
        """
        self._check_open("create a task")
        bridge, inst = self._registrar.bridge, self._inst
        loop = bridge.usable()
        if loop is None:
            coro.close()
            raise TypeError(
                f"module {self.name!r}: create_task needs the host's running event loop "
                f"(load the module with await host.ainsmod / amodprobe)"
            )
        label = name or f"{inst.name}:{getattr(coro, '__qualname__', 'task')}"
        task: asyncio.Task[T] = bridge.call(lambda: loop.create_task(coro, name=label))
        inst.own_set("tasks").add(task)

        def cancel() -> Any:
            inst.own_set("tasks").discard(task)
            if task.done():
                return None
            bridge.call(task.cancel)

            async def settle() -> None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

            return None if _on_loop(loop) else settle()

        inst.undo.push(f"task {label!r}", cancel)
        return task

    def call_later(self, delay: float, fn: Callable[..., object], *args: Any) -> Timer:
        """Call ``fn(*args)`` once after ``delay`` seconds (from when the module is LIVE).

        On the host's event loop if it has one, else in a timer thread. Cancelled at unload.
        """
        return self._timer(delay, fn, args, repeat=False)

    def every(self, interval: float, fn: Callable[..., object], *args: Any) -> Timer:
        """Call ``fn(*args)`` every ``interval`` seconds while LIVE (a coroutine function is
        awaited). On the host's event loop if it has one, else in a thread. Stopped at unload.
        """
        return self._timer(interval, fn, args, repeat=True)

    def _timer(
        self, delay: float, fn: Callable[..., object], args: tuple[Any, ...], *, repeat: bool
    ) -> Timer:
        self._check_open("start a timer")
        inst, timer = self._inst, Timer()
        loop = self._registrar.bridge.usable()
        label = f"{inst.name}:{getattr(fn, '__name__', 'timer')}"

        async def on_loop() -> None:
            while True:
                await asyncio.sleep(delay)
                result = fn(*args)
                if inspect.isawaitable(result):
                    await result
                if not repeat:
                    return

        def in_thread() -> None:
            while not inst.stopping.wait(delay) and not timer.cancelled:
                fn(*args)
                if not repeat:
                    return

        def start() -> None:
            if timer.cancelled:
                return
            if loop is not None:
                task = self.create_task(on_loop(), name=label)

                def cancel_task() -> None:
                    loop.call_soon_threadsafe(task.cancel)

                timer._cancel = cancel_task
            else:
                self.thread(in_thread, name=label)  # wakes on stopping; checks cancelled

        inst.undo.push(f"timer {label!r}", timer.cancel)
        self._registrar.start_when_live(inst, start)
        return timer

    def submit(
        self, fn: Callable[..., T], *args: Any, **kwargs: Any
    ) -> concurrent.futures.Future[T]:
        """Run ``fn`` in the host's worker threads (executor work), managed.

        Work still queued at unload is cancelled; work running counts as code in flight.
        """
        self._check_open("submit executor work")
        # The pool's queue keeps a cancelled work item until a worker pops it: give it a box
        # that the undo empties, so it never keeps the unloaded module alive.
        box: list[Any] = [fn, args, kwargs]

        def run() -> T:
            work, a, k = box
            result: T = work(*a, **k)
            return result

        future = self._registrar.executor().submit(run)

        def cancel() -> None:
            future.cancel()
            box[:] = [None, (), {}]

        self._inst.undo.push(f"executor work {getattr(fn, '__qualname__', fn)!r}", cancel)
        return future

    def enter(self, cm: AbstractContextManager[T]) -> T:
        """Enter ``cm`` now; exit it at unload (or after a failed init), in reverse order."""
        self._check_open("enter a context manager")
        value = cm.__enter__()
        what = f"context {type(cm).__qualname__}"
        self._inst.undo.push(what, lambda: cm.__exit__(None, None, None))
        return value

    async def enter_async(self, cm: AbstractAsyncContextManager[T]) -> T:
        """Enter an async context manager now; its ``__aexit__`` is awaited at unload."""
        self._check_open("enter a context manager")
        value = await cm.__aenter__()

        def leave() -> Awaitable[object]:
            return cm.__aexit__(None, None, None)

        self._inst.undo.push(f"async context {type(cm).__qualname__}", leave)
        return value

    def _on_main_loop(self) -> Any:
        loop = self._registrar.bridge.usable()
        thread = getattr(loop, "_thread_id", None)
        return loop if thread == threading.main_thread().ident else None

    def _run_on_loop(self, fn: Callable[[], object]) -> None:
        self._registrar.bridge.call(fn)

    def _check_open(self, action: str) -> None:
        if self._inst.state in (State.GOING, State.GONE):
            raise ModuleGoing(
                f"module {self.name!r} is being unloaded; it cannot {action} now",
                module=self.name,
            )

    def __repr__(self) -> str:
        return f"<livemod.ModuleContext {self.name!r} {self._inst.state.name}>"
