"""The second stage of the lifecycle: GOING, waiting for quiescence, exit, managed undo, GONE.

A mixin of ``Host`` (the host is where the lifecycle joins up; this is its unload half):
unpublish, wait for calls in flight (polled with a bounded back-off, since a wake-up there
would cost every call) and -- with ``wait`` -- for holds and pins (woken by the last
release), roll back to LIVE on timeout, else run ``exit`` (bounded, in a thread of its own),
the managed undo, take the module out of the table and ``sys.modules``, and check with weak
references that its code is gone.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import queue
import threading
import time
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from . import _leaks, _loader, _quiesce, _scrub
from ._aio import LoopBridge, on_loop
from ._context import ModuleContext
from ._hooks import HookTable
from ._instance import Instance
from ._journal import Journal
from ._records import brief
from ._state import State
from ._table import ModuleTable
from ._tamper import Baseline
from .errors import ModuleBusy

__all__ = ["UnloadMixin"]

_log = logging.getLogger("livemod")

#: Back-off bounds (seconds) while waiting for calls in flight: the only polling wait, since
#: a wake-up there would cost every call (design.md, "Hazards").
_POLL_MIN: Final = 0.0002
_POLL_MAX: Final = 0.01
#: How often (seconds) ``rmmod(progress=...)`` is told what the unload still waits for.
_PROGRESS_EVERY: Final = 0.5
#: Seconds a leak check waits for another thread's garbage collection to end.
_JUDGE_WITHIN: Final = 30.0

#: livemod's public surface as first seen (set by the first Host).
BASELINE: list[Baseline] = []


class UnloadMixin:
    """``_unload`` and what it needs; the state lives on ``Host``."""

    if TYPE_CHECKING:
        _lock: threading.Lock
        _journal: Journal
        _hooks: HookTable
        _bridge: LoopBridge
        _table: ModuleTable
        _scrubbers: list[_scrub.Scrubber]
        leak_check: bool
        exit_timeout: float | None

        def _event(self, kind: str, module: str, message: str, **data: object) -> None: ...
        def _taint(self, flag: str, module: str, reason: str) -> None: ...
        def _complete(self, result: object, what: str) -> object: ...
        def _modules_of(self, inst: Instance) -> list[Any]: ...

    def _unload(
        self,
        inst: Instance,
        *,
        wait: bool,
        timeout: float,
        force: bool,
        progress: Callable[[str, list[str]], object] | None = None,
    ) -> None:
        """LIVE -> GOING -> (exit, undo) -> GONE, or back to LIVE. Caller holds ``_op_lock``."""
        inside = _quiesce.current_thread_in(inst.namespace_ids)
        if inside is not None or threading.get_ident() in inst.own_thread_idents():
            raise ModuleBusy(
                f"cannot remove {inst.name!r} from inside its own code "
                f"({inside or 'its own thread'}): the unload would wait for itself "
                f"(call rmmod from another thread)",
                module=inst.name, holders=(f"the calling thread, at {inside}",),
            )
        with self._lock:
            if not (wait or force):
                self._table.refuse_if_held_unlocked(inst)
            notice = self._journal.move_unlocked(inst, State.GOING)
            removed = self._hooks.unpublish_unlocked(inst.id)
        self._journal.notify(notice)
        if force:
            self._taint("forced-unload", inst.name, "rmmod --force: did not wait for users")
        else:
            pending = self._wait_quiet(
                inst, time.monotonic() + timeout, holds=wait, progress=progress
            )
            if not pending and not wait:
                with self._lock:
                    pending = inst.holders()  # taken while we waited for calls in flight
            if pending:
                with self._lock:
                    self._hooks.publish_unlocked(removed)
                    notice = self._journal.move_unlocked(inst, State.LIVE)
                self._journal.notify(notice)
                self._event("unload-refused", inst.name,
                            f"unload rolled back: busy ({'; '.join(pending)})")
                # The traceback of what we raise keeps this frame: it must not keep the
                # module's implementations (a caller may force the unload in its handler).
                del removed
                raise ModuleBusy(
                    f"cannot remove {inst.name!r}: still busy after {timeout:g}s "
                    f"({'; '.join(pending)}); the unload was rolled back and it is LIVE again "
                    f"(release it, retry with a longer timeout, or use force=True)",
                    module=inst.name, holders=tuple(pending),
                )
        removed.clear()
        self._finish(inst)

    def _wait_quiet(
        self,
        inst: Instance,
        deadline: float,
        *,
        holds: bool,
        progress: Callable[[str, list[str]], object] | None = None,
    ) -> list[str]:
        """Wait until nothing runs in (and, with ``holds``, nothing holds) the module.

        Returns what is still pending at the deadline (empty: quiet).
        """
        delay = _POLL_MIN
        me = threading.get_ident()
        told = time.monotonic()
        while True:
            pending = [f"a call in flight on hook {h!r}" for h in self._hooks.busy_hooks(inst.id)]
            if not pending or deadline - time.monotonic() <= delay:
                # Stacks are costly to read: only once the cheap counters say quiet (and on
                # the last round, so a timeout names everything still busy).
                pending += _quiesce.running_in(
                    inst.files, exclude=inst.own_thread_idents() | {me}
                )
                pending += self._bridge.tasks_in(
                    list(self._hooks.loops), inst.namespace_ids, inst.tasks
                )
            polling = bool(pending)
            if polling and on_loop(self._bridge.loop):
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

    def _finish(self, inst: Instance) -> None:
        """Exit, managed undo, out of the table, GONE, leak check."""
        inst.stopping.set()
        module, ctx = inst.module, inst.context
        exit_fn = getattr(module, "exit", None) if inst.init_ok else None
        if exit_fn is not None and ctx is not None:
            self._run_exit(inst.name, exit_fn, ctx)
        del exit_fn, ctx
        for failure in inst.undo.unwind(self._complete):
            self._event("cleanup-failed", inst.name, f"cleanup failed: {failure}")
        self._scrub(inst)
        watch = None
        if self.leak_check:
            watch = _leaks.safe_watch(inst.name, inst.info.version, self._modules_of(inst))
        if watch is not None:
            watch.atexit_notes = list(inst.direct_atexit)
            watch.native = tuple(inst.native)
        del module
        _loader.remove_modules(inst.private_name)
        with self._lock:
            if self._table.names.get(inst.name) is inst:
                self._table.drop_unlocked(inst)
            if inst in self._table.pending:
                self._table.pending.remove(inst)
            notice = self._journal.move_unlocked(inst, State.GONE)
            inst.holds.clear()
            inst.pins.clear()
        self._table.by_private.pop(inst.private_name, None)
        inst.release_code()
        self._journal.notify(notice)
        self._event("unload", inst.name, f"unloaded {inst.info.version}", version=inst.info.version)
        if watch is not None:
            gc.collect()
            if watch.survivors():
                if _leaks.other_thread_collecting():
                    # Our collect returned at once: another thread's is under way. Decide
                    # when it is over, without holding up this unload.
                    threading.Thread(target=self._judge_later, args=(watch,), daemon=True,
                                     name=f"livemod-leakcheck-{inst.name}").start()
                else:
                    self._judge(watch)

    def _run_exit(self, name: str, exit_fn: Callable[..., Any], ctx: ModuleContext) -> None:
        """Run ``exit`` in a thread of its own, for at most ``exit_timeout`` seconds: a
        module whose exit hangs is reported and taints the host, which goes on."""
        failure: list[str] = []

        def run() -> None:
            try:
                self._complete(exit_fn(ctx), f"exit of {name!r}")
            except BaseException as exc:
                failure.append(brief(exc))
                _log.error("module %r: exit raised; carrying on with managed undo:\n%s",
                           name, "".join(traceback.format_exception(exc)))
                del exc

        if self.exit_timeout is None:
            run()
        else:
            worker = threading.Thread(target=run, name=f"livemod-exit-{name}", daemon=True)
            worker.start()
            worker.join(self.exit_timeout)
        if self.exit_timeout is not None and worker.is_alive():
            self._taint("exit-timeout", name, f"exit did not return within "
                        f"{self.exit_timeout:g}s; carried on without it")
        elif failure:
            self._taint("exit-failed", name, f"exit raised {failure[0]}")
        self._check_livemod_intact(name)

    def _scrub(self, inst: Instance) -> None:
        """Take back what the module's code left in process registries (never raises)."""
        loops = [self._bridge.loop, *self._hooks.loops]
        removed, failures = _scrub.scrub_instance(
            inst, self._modules_of(inst), list(self._scrubbers), loops)
        if removed:
            self._event("scrubbed", inst.name, f"took back what it left: {'; '.join(removed)}",
                        removed=tuple(removed))
        for failure in failures:
            self._event("cleanup-failed", inst.name, f"scrub failed: {failure}")

    def _check_livemod_intact(self, name: str) -> None:
        """A module may rebind livemod's names or patch its classes: put them back."""
        changed = BASELINE[0].restore() if BASELINE else []
        if changed:
            self._taint("livemod-tampered", name, f"module changed {', '.join(changed)}; "
                        f"restored")

    def _judge(self, watch: _leaks.LeakWatch) -> None:
        gc.collect()
        if watch.survivors():
            watch.explain()
            if watch.held_outside_gc():  # only native code holds them: not a failure
                self._event("unload", watch.name, f"{len(watch.survivors())} object(s) held "
                            f"outside the GC by native code ({', '.join(watch.native)})",
                            held_outside_gc=watch.chains)
                return
            self._journal.add_leak(watch)
            self._taint("module-leaked", watch.name, "objects still alive after unload")

    def _judge_later(self, watch: _leaks.LeakWatch) -> None:
        deadline = time.monotonic() + _JUDGE_WITHIN
        while _leaks.other_thread_collecting() and time.monotonic() < deadline:
            time.sleep(0.01)
        self._judge(watch)
