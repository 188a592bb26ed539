"""The bridge between a host's operations and the asyncio event loop it is used from.

Module operations are synchronous and serialised (they block: waiting for quiescence is a
wait). From a running loop they are run in a worker thread (``await host.ainsmod(...)``), so
the loop keeps serving -- including the very calls an unload waits for. Whatever must happen
*on* the loop is sent there from the worker: async ``init``/``exit``, creating and cancelling
the module's tasks, and looking at the loop's tasks for code of a module being unloaded
(task stacks are read on the loop's own thread, never from another one).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import inspect
from collections.abc import Awaitable, Callable, Collection
from types import FrameType
from typing import Any, Final, TypeVar, final

from ._quiesce import describe_frame
from .errors import LivemodError

__all__ = ["LoopBridge", "on_loop"]

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
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(fn())
            except BaseException as exc:
                future.set_exception(exc)

        loop.call_soon_threadsafe(run)
        return future.result(_ASK_TIMEOUT)

    def tasks_in(
        self, loops: Collection[asyncio.AbstractEventLoop], namespaces: Collection[int],
        exclude: Collection[object],
    ) -> list[str]:
        """Describe each task, on the host's loop and on ``loops``, suspended inside the
        module's code. Each loop's tasks are read on that loop's own thread."""
        found: list[str] = []
        for loop in {*loops, *([self.loop] if self.loop is not None else [])}:
            if loop.is_running():
                found += _ask(loop, functools.partial(_scan, loop, namespaces, exclude))
        return found


def _scan(
    loop: asyncio.AbstractEventLoop, namespaces: Collection[int], exclude: Collection[object]
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


def _ask(loop: asyncio.AbstractEventLoop, fn: Callable[[], list[str]]) -> list[str]:
    """Run ``fn`` on ``loop``'s thread; a loop that does not answer in time is blocked, and
    a blocked loop runs no task either."""
    if on_loop(loop):
        return fn()
    future: concurrent.futures.Future[list[str]] = concurrent.futures.Future()

    def run() -> None:
        try:
            future.set_result(fn())
        except BaseException as exc:
            future.set_exception(exc)

    try:
        loop.call_soon_threadsafe(run)
        return future.result(_ASK_TIMEOUT)
    except (RuntimeError, concurrent.futures.TimeoutError):  # closed meanwhile, or blocked
        return []
