"""Waiting for a module to go quiet: no call in flight, no code running, (optionally) no
hold or pin left.

Calls in flight: the last reader of a retired snapshot wakes the waiter (``HookTable``
swaps the retired snapshot's leave for one that does, so the hot path pays nothing); a
bounded back-off poll covers a reader that left through the plain leave it had fetched
before the swap. Holds and pins wake the waiter through ``Instance.wakeups`` when the
last one is released. Stacks are costly to read, so they are read only once the cheap
per-hook counters say quiet (and on the last round, so a timeout names everything still
busy).
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable
from typing import Final

from . import _quiesce
from ._aio import LoopBridge, on_loop
from ._hooktable import HookTable
from ._instance import Instance

__all__ = ["Progress", "wait_quiet"]

#: Back-off bounds (seconds) while waiting for calls in flight.
_POLL_MIN: Final = 0.001
_POLL_MAX: Final = 0.01
#: How often (seconds) ``rmmod(progress=...)`` is told what the unload still waits for.
_PROGRESS_EVERY: Final = 0.5

Progress = Callable[[str, list[str]], object]


def wait_quiet(
    inst: Instance,
    hooks: HookTable,
    bridge: LoopBridge,
    deadline: float,
    *,
    holds: bool,
    progress: Progress | None = None,
) -> list[str]:
    """Wait until nothing runs in (and, with ``holds``, nothing holds) the module.

    Returns what is still pending at the deadline (empty: quiet).
    """
    hooks.add_waiter(inst.wakeups)
    try:
        return _wait(inst, hooks, bridge, deadline, holds=holds, progress=progress)
    finally:
        hooks.remove_waiter(inst.wakeups)


def _wait(inst: Instance, hooks: HookTable, bridge: LoopBridge, deadline: float, *,
          holds: bool, progress: Progress | None) -> list[str]:
    delay = _POLL_MIN
    me = threading.get_ident()
    told = time.monotonic()
    while True:
        pending = [f"a call in flight on hook {h!r}" for h in hooks.busy_hooks(inst.id)]
        if not pending or deadline - time.monotonic() <= delay:
            pending += _quiesce.running_in(
                inst.namespace_ids, inst.files, exclude=inst.own_thread_idents() | {me}
            )
            pending += bridge.tasks_in(inst.namespace_ids, inst.tasks)
        polling = bool(pending)
        if polling and on_loop(bridge.loop):
            # Blocking the loop's own thread would keep those calls from ever finishing.
            return [*pending, "and rmmod was called on the event loop's own thread "
                    "(use await host.armmod(...))"]
        if holds:
            pending += inst.holders()
        now = time.monotonic()
        remaining = deadline - now
        if not pending or remaining <= 0:
            return pending
        if progress is not None and now >= told:
            told = now + _PROGRESS_EVERY
            progress(inst.name, list(pending))
            remaining = deadline - time.monotonic()
        # Holds and pins wake us; calls in flight are polled with a bounded back-off.
        wake_by = min(delay, remaining) if polling else remaining
        if progress is not None:
            wake_by = min(wake_by, _PROGRESS_EVERY)
        with contextlib.suppress(queue.Empty):
            inst.wakeups.get(timeout=max(wake_by, 0.0))
        delay = min(delay * 2, _POLL_MAX)
