"""The bridge between a host's operations and the asyncio event loop it is used from.

Module operations are synchronous and serialised (they block: waiting for quiescence is a
wait). From a running loop they are run in a worker thread (``await host.ainsmod(...)``), so
the loop keeps serving -- including the very calls an unload waits for. Whatever must happen
*on* the loop is sent there from the worker: async ``init``/``exit``, creating and cancelling
the module's tasks, and looking at the loop's tasks for code of a module being unloaded
(task stacks are read on the loop's own thread, never from another one).

Which loops to look at
----------------------

A task suspended inside the module's code resumes into it, so unload must see it on any
loop, not only the host's: an application may run several loops, or drive the host
synchronously from a thread whose loop awaits module coroutines. Learning the loops on
every ``acall`` cost a third to a half of a whole dispatch (``bench/bench_acall_floor.py``),
paid on every call for a question asked only at unload. So unload asks asyncio instead:
every task is in a process-wide registry (``asyncio.tasks._all_tasks`` on 3.11;
``_scheduled_tasks`` plus ``_eager_tasks`` on 3.12 and 3.13), and each task knows its loop.
The registries are private, so ``registry_found()`` says whether this CPython has them
(a test holds each supported version to it); without them only the host's own loop is seen.
The registries are copied at C level (``set.copy``), never iterated in Python, because other
threads add and drop tasks meanwhile -- with or without a GIL.
"""

from __future__ import annotations

import asyncio
import asyncio.tasks
import concurrent.futures
import functools
import inspect
import time
import weakref
from collections.abc import Awaitable, Callable, Collection
from types import FrameType
from typing import Any, Final, TypeVar, final

from ._quiesce import describe_frame
from .errors import LivemodError

__all__ = ["LoopBridge", "on_loop", "registry_found", "running_loops"]

T = TypeVar("T")

#: Seconds to wait for the loop to answer a question about its tasks before assuming it
#: is blocked (a blocked loop is not running any task either).
_ASK_TIMEOUT = 2.0


def on_loop(loop: asyncio.AbstractEventLoop | None) -> bool:
    """Whether the calling thread is running ``loop`` right now."""
    try:
        return loop is not None and asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def _close(aw: Awaitable[Any]) -> None:
    if inspect.iscoroutine(aw):
        aw.close()  # no "never awaited" warning for a coroutine we refuse to run


@final
class LoopBridge:
    """The loop a host is used from (set by its first async call)."""

    __slots__ = ("loop",)

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None

    def attach(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        if self.loop is not None and self.loop is not loop and not self.loop.is_closed():
            raise LivemodError(
                "this host is already used from another event loop; use one host per loop"
            )
        self.loop = loop
        return loop

    def usable(self) -> asyncio.AbstractEventLoop | None:
        loop = self.loop
        return loop if loop is not None and loop.is_running() else None

    def run(self, aw: Awaitable[T], what: str) -> T:
        """Run ``aw`` to completion on the loop, from a thread that is not the loop's."""
        loop = self.usable()
        if loop is None:
            _close(aw)
            raise TypeError(
                f"{what} is a coroutine, and this host has no running event loop: "
                f"use the async API from one (async with livemod.Host(...), await host.ainsmod)"
            )
        if on_loop(loop):
            _close(aw)
            raise TypeError(
                f"{what} is a coroutine, and it was called from the event loop's own thread: "
                f"use the awaitable form (await host.ainsmod / armmod / aclose)"
            )

        async def wrapper() -> T:
            return await aw

        return asyncio.run_coroutine_threadsafe(wrapper(), loop).result()

    def call(self, fn: Callable[[], T]) -> T:
        """Call ``fn`` on the loop's thread and return its result (at once if already there)."""
        loop = self.usable()
        if loop is None or on_loop(loop):
            return fn()
        return _post(loop, fn).result(_ASK_TIMEOUT)

    def loops(self) -> set[asyncio.AbstractEventLoop]:
        """Every running loop with a task, and the host's own loop if it runs."""
        found = running_loops()
        loop = self.usable()
        if loop is not None:
            found.add(loop)
        return found

    def tasks_in(
        self, namespaces: Collection[int], exclude: Collection[object]
    ) -> list[str]:
        """Describe each task, on every running loop, suspended inside the module's code.

        Each loop's tasks are read on that loop's own thread: the question is posted to
        every loop first and the answers collected against one deadline, so blocked loops
        cost ``_ASK_TIMEOUT`` in all, not each. The deadline is not the unload's own: the
        last look, at the unload's deadline, must still get its answer.
        """
        loops = self.loops()
        if not loops:
            return []
        scan = functools.partial(_scan, namespaces=namespaces, exclude=exclude)
        here = None
        asked: list[concurrent.futures.Future[list[str]]] = []
        for loop in loops:
            if on_loop(loop):
                here = loop
            else:
                asked.append(_post(loop, functools.partial(scan, loop)))
        found = scan(here) if here is not None else []
        deadline = time.monotonic() + _ASK_TIMEOUT
        for future in asked:
            try:
                found += future.result(max(deadline - time.monotonic(), 0.0))
            except (RuntimeError, concurrent.futures.TimeoutError):
                continue  # closed meanwhile, or blocked: a blocked loop runs no task either
        return found


def _weak_registries() -> tuple[weakref.WeakSet[Any], ...]:
    return tuple(
        ws for ws in (getattr(asyncio.tasks, name, None)
                      for name in ("_all_tasks", "_scheduled_tasks"))  # 3.11 / 3.12+
        if isinstance(ws, weakref.WeakSet)
    )


def _strong_registries() -> tuple[set[Any], ...]:
    eager = getattr(asyncio.tasks, "_eager_tasks", None)  # 3.12+: tasks running eagerly
    return (eager,) if isinstance(eager, set) else ()


_WEAK: Final = _weak_registries()
_STRONG: Final = _strong_registries()


def registry_found() -> bool:
    """Whether this CPython keeps the process-wide task registry unload reads."""
    return bool(_WEAK)


def running_loops() -> set[asyncio.AbstractEventLoop]:
    """Every running event loop in the process that has a task not done yet."""
    tasks: list[Any] = []
    for weak in _WEAK:
        refs: set[weakref.ref[Any]] = weak.data.copy()  # type: ignore[attr-defined]
        tasks += [ref() for ref in refs]
    for strong in _STRONG:
        tasks += strong.copy()
    loops: set[asyncio.AbstractEventLoop] = set()
    for task in tasks:
        try:
            if task is None or task.done():
                continue
            loop = task.get_loop()
        except Exception:  # a foreign task type answers what it can
            continue
        if loop not in loops and loop.is_running():
            loops.add(loop)
    return loops


def _scan(
    loop: asyncio.AbstractEventLoop, *, namespaces: Collection[int],
    exclude: Collection[object],
) -> list[str]:
    found = []
    for task in asyncio.all_tasks(loop):
        if task in exclude or task.done():
            continue
        for frame in _awaiting(task):
            if id(frame.f_globals) in namespaces:
                found.append(f"task {task.get_name()!r} at {describe_frame(frame)}")
                break
    return found


def _awaiting(task: asyncio.Task[Any]) -> list[FrameType]:
    """Every frame of the chain of coroutines a task is suspended in.

    ``Task.get_stack()`` shows only the outermost coroutine: a module coroutine awaited
    from application code (``await export()``) sits further down the ``cr_await`` chain.
    """
    frames = []
    link: Any = task.get_coro()
    for _ in range(_MAX_CHAIN):
        if link is None:
            break
        frame = getattr(link, "cr_frame", None) or getattr(link, "gi_frame", None) or \
            getattr(link, "ag_frame", None)
        if frame is not None:
            frames.append(frame)
        link = getattr(link, "cr_await", None) or getattr(link, "gi_yieldfrom", None) or \
            getattr(link, "ag_await", None)
    return frames


_MAX_CHAIN: Final = 1000


def _post(loop: asyncio.AbstractEventLoop, fn: Callable[[], T]) -> concurrent.futures.Future[T]:
    """Run ``fn`` on ``loop``'s thread; its answer (or its exception, or the loop's
    ``RuntimeError`` if it is closed) arrives in the returned future."""
    future: concurrent.futures.Future[T] = concurrent.futures.Future()

    def run() -> None:
        try:
            future.set_result(fn())
        except BaseException as exc:
            future.set_exception(exc)

    try:
        loop.call_soon_threadsafe(run)
    except RuntimeError as exc:  # closed meanwhile
        future.set_exception(exc)
    return future
