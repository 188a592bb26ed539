"""The awaitable forms of a host's operations, for hosts used from an asyncio program.

Each runs the synchronous operation in a worker thread (``asyncio.to_thread``) after noting
the running loop, so the loop keeps serving -- including the calls an unload waits for --
while async ``init``/``exit`` and the module's tasks are handled on the loop (``_aio``).
Cancelling the awaiting task does not cancel the operation: it completes in its thread.
"""

from __future__ import annotations

import asyncio
import os
from types import TracebackType
from typing import TYPE_CHECKING

from ._aio import LoopBridge
from ._instance import Module

if TYPE_CHECKING:
    from typing import Self

__all__ = ["AsyncHostMixin"]


class AsyncHostMixin:
    """``ainsmod``, ``amodprobe``, ``armmod``, ``aclose`` and ``async with``."""

    _bridge: LoopBridge

    if TYPE_CHECKING:
        def insmod(self, path: str | os.PathLike[str], **params: object) -> Module: ...
        def modprobe(self, name: str, **params: object) -> Module: ...
        def rmmod(self, name: str, *, wait: bool = ..., timeout: float | None = ...,
                  force: bool = ..., cascade: bool = ...) -> None: ...
        def close(self, *, timeout: float | None = ...) -> None: ...
        def replace(self, name: str, path: str | os.PathLike[str] | None = ..., *,
                    timeout: float | None = ..., cascade: bool = ..., downgrade: bool = ...,
                    **params: object) -> Module: ...

    async def ainsmod(self, path: str | os.PathLike[str], **params: object) -> Module:
        """``insmod`` from a running event loop: the operation runs in a worker thread, so
        the loop keeps serving; an async ``init`` runs on the loop."""
        self._bridge.attach()
        return await asyncio.to_thread(self.insmod, path, **params)

    async def amodprobe(self, name: str, **params: object) -> Module:
        """``modprobe`` from a running event loop (see ``ainsmod``)."""
        self._bridge.attach()
        return await asyncio.to_thread(self.modprobe, name, **params)

    async def armmod(
        self,
        name: str,
        *,
        wait: bool = False,
        timeout: float | None = None,
        force: bool = False,
        cascade: bool = False,
    ) -> None:
        """``rmmod`` from a running event loop: tasks in flight keep running while it waits;
        the module's own tasks are cancelled and awaited; an async ``exit`` runs on the loop."""
        self._bridge.attach()
        await asyncio.to_thread(
            self.rmmod, name, wait=wait, timeout=timeout, force=force, cascade=cascade
        )

    async def areplace(
        self,
        name: str,
        path: str | os.PathLike[str] | None = None,
        *,
        timeout: float | None = None,
        cascade: bool = False,
        downgrade: bool = False,
        **params: object,
    ) -> Module:
        """``replace`` from a running event loop: the old version's calls in flight keep
        running on the loop while it drains; async handover/init/exit run on the loop."""
        self._bridge.attach()
        return await asyncio.to_thread(
            self.replace, name, path, timeout=timeout, cascade=cascade, downgrade=downgrade,
            **params,
        )

    async def aclose(self, *, timeout: float | None = None) -> None:
        """``close`` from a running event loop."""
        self._bridge.attach()
        await asyncio.to_thread(self.close, timeout=timeout)

    async def __aenter__(self) -> Self:
        self._bridge.attach()
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
