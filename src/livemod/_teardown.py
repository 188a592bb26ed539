"""One teardown for a module instance, whether its load failed or it is being unloaded.

The steps, in this order, and why:

1. ``stopping`` is set first, so managed threads and timers start winding down while the
   rest runs.
2. ``exit`` runs (an unload of a module whose init succeeded only), in a thread of its own
   (a spare one started ahead, ``_exit_runner``) and bounded by ``exit_timeout``: a module
   whose exit hangs cannot hang the host.
3. The managed undo stack unwinds, newest first, and a failing undo never stops the others.
   It comes after exit because exit may still use what the module took. Then the scrub
   (``_scrub``) takes back what the module's code left directly in CPython's registries,
   while its namespaces are still alive to identify its objects (a failed load too).
4. The leak watch takes its weak references *before* the namespaces leave ``sys.modules``
   (afterwards nothing would name them).
5. Out of ``sys.modules``, out of the table and GONE in one hold of the lock, then the
   instance drops every reference to the module's code, and only then are subscribers told
   (they are user code: never under the lock).
6. The leak watch goes to the host's judge (``_leak_judge``), which collects and judges on
   its own thread: the full collection is the costly part of an unload, and only those who
   read verdicts (``leaks()``, ``tainted``, ``events()``, ``statistics()``) wait for it.

A failed load skips 2, 4 and 6 (no exit: init never succeeded; nothing was published, so
there is nothing to prove gone) and records no "cleanup-failed" or "unload" events.
"""

from __future__ import annotations

import inspect
import logging
import threading
import traceback
from collections.abc import Callable
from typing import Any, final

from . import _leak_watch, _leaks, _loader, _scrub, _scrub_registries, _wire
from ._aio import LoopBridge
from ._exit_runner import ExitRunner
from ._instance import Instance, ModuleIdentity
from ._journal import Journal
from ._leak_judge import LeakJudge
from ._records import brief
from ._settings import Settings
from ._state import State
from ._table import ModuleTable
from ._tamper import Baseline

__all__ = ["BASELINE", "Teardown"]

_log = logging.getLogger("livemod")

#: livemod's public surface as first seen (set by the first Host).
BASELINE: list[Baseline] = []


@final
class Teardown:
    """Tears instances down for one host; see the module docstring for the order."""

    __slots__ = ("_bridge", "_exits", "_journal", "_settings", "_table", "judge", "scrubbers")

    def __init__(self, table: ModuleTable, journal: Journal, bridge: LoopBridge,
                 settings: Settings) -> None:
        self._table = table
        self._journal = journal
        self._bridge = bridge
        self._settings = settings
        self.scrubbers: list[_scrub.Scrubber] = []  # Host.scrubber; guarded by table.lock
        self._exits = ExitRunner()
        self.judge = LeakJudge(journal)  # leak verdicts, off the unload's path
        if not BASELINE:  # before any module could have touched livemod
            BASELINE.append(Baseline())

    def complete(self, result: object, what: str) -> object:
        """Finish what a module function returned: an awaitable is run on the loop."""
        if inspect.isawaitable(result):
            return self._bridge.run(result, what)
        return result

    def discard(self, inst: Instance) -> None:
        """Undo a load that failed before LIVE: nothing was ever published."""
        self._teardown(inst, unloading=False)

    def finish(self, inst: Instance) -> None:
        """Exit, managed undo, out of the table, GONE, leak check (an unload)."""
        self._teardown(inst, unloading=True)

    def _teardown(self, inst: Instance, *, unloading: bool) -> None:
        # Never leaves the instance GOING: a failure on the way (livemod's own, a scrub, the
        # leak watch, an interrupt) is logged and taints the host with its reason (so it is
        # in the event log), and the module is still taken out and GONE; an interrupt is
        # raised again once it is.
        watch: _leaks.LeakWatch | None = None
        interrupted: BaseException | None = None
        try:
            try:
                watch = self._module_side(inst, unloading=unloading)
            except BaseException as exc:
                interrupted = self.failed(inst, "exit and managed undo", exc)
                del exc
            try:
                _loader.remove_modules(inst.private_name,
                                       _wire.unwire(inst, self._journal.event))
            except BaseException as exc:
                interrupted = self.failed(inst, "taking it out of sys.modules", exc) or interrupted
                del exc
            self._gone(inst, watch, unloading=unloading)
        finally:
            self._exits.resume()  # the exit's thread may now start its successor
        if interrupted is not None:
            raise interrupted

    def failed(self, inst: Instance, step: str, exc: BaseException) -> BaseException | None:
        """Report a failed step of a teardown that goes on; the exception if it must be
        raised again once the module is GONE (an interrupt)."""
        _log.error("module %r: %s failed; removing it anyway:\n%s", inst.name, step,
                   "".join(traceback.format_exception(exc)))
        self._journal.taint("unload-failed", inst.name,
                            f"{step} failed ({brief(exc)}); the module was removed anyway")
        return None if isinstance(exc, Exception) else exc

    def _module_side(self, inst: Instance, *, unloading: bool) -> _leaks.LeakWatch | None:
        inst.stopping.set()
        exit_thread = self._exit(inst) if unloading else None
        failures = inst.undo.unwind(self.complete)
        self._scrub(inst, unloading=unloading)
        watch = None
        leak_check = self._settings.leak_check
        unverifiable = _leaks.unverifiable() if leak_check else None
        if unloading:
            for failure in failures:
                self._journal.event("cleanup-failed", inst.name, f"cleanup failed: {failure}")
            if leak_check and unverifiable is None:
                watch = _leak_watch.watch(inst.name, inst.info.version,
                                     _loader.namespaces_of(inst.private_name))
                watch.atexit_notes = list(inst.direct_atexit)
                watch.native = tuple(inst.native)
                watch.exit_thread = exit_thread
        return watch

    def _scrub(self, inst: Instance, *, unloading: bool) -> None:
        """Take back what the module's code left in process registries (never raises)."""
        with self._table.lock:
            extra = list(self.scrubbers)
        removed, failures = _scrub_registries.scrub_instance(
            inst, _loader.namespaces_of(inst.private_name), extra, self._bridge.loops())
        if removed:
            self._journal.event("scrubbed", inst.name,
                                f"took back what it left: {'; '.join(removed)}",
                                removed=tuple(removed))
        for failure in failures:
            self._journal.event("cleanup-failed", inst.name, f"scrub failed: {failure}")

    def _gone(self, inst: Instance, watch: _leaks.LeakWatch | None, *, unloading: bool) -> None:
        with self._table.lock:
            self._table.drop_unlocked(inst)  # during an upgrade the new version keeps it
            if inst in self._table.pending:
                self._table.pending.remove(inst)
            notice = self._journal.move_unlocked(inst, State.GONE)
            inst.holds.clear()
            inst.pins.clear()
        self._table.by_private.pop(inst.private_name, None)
        inst.release_code()
        self._journal.notify(notice)
        if not unloading:
            self.check_intact(inst.name)
            return
        unverifiable = _leaks.unverifiable() if self._settings.leak_check else None
        if unverifiable is None:
            self._journal.event("unload", inst.name, f"unloaded {inst.info.version}",
                                version=inst.info.version)
        else:  # free-threaded 3.13: no verdict is possible, and the log says so
            self._journal.event("unload", inst.name, f"unloaded {inst.info.version}; leak "
                                f"check {unverifiable}", version=inst.info.version,
                                leak_check=unverifiable)
        if watch is not None:
            self.judge.submit(watch)

    def _exit(self, inst: Instance) -> threading.Thread | None:
        # A method of its own, so that no local of this frame keeps the module alive.
        ctx = inst.context
        exit_fn = getattr(inst.module, "exit", None) if inst.init_ok else None
        if exit_fn is not None and ctx is not None:
            return self._run_exit(inst.name, exit_fn, ctx)
        return None

    def _run_exit(self, name: str, exit_fn: Callable[..., Any], ctx: ModuleIdentity
                  ) -> threading.Thread | None:
        """Run ``exit`` on a thread of its own (``_exit_runner``), for at most
        ``exit_timeout`` seconds: a module whose exit hangs is reported and taints the
        host, which goes on. The thread it ran on, which the leak judge joins (None: run
        inline, or it did not return)."""
        failure: list[str] = []
        exit_timeout = self._settings.exit_timeout

        def run() -> None:
            try:
                self.complete(exit_fn(ctx), f"exit of {name!r}")
            except BaseException as exc:
                failure.append(brief(exc))
                _log.error("module %r: exit raised; carrying on with managed undo:\n%s",
                           name, "".join(traceback.format_exception(exc)))
                del exc

        thread = None
        if exit_timeout is None:
            run()
        else:
            thread = self._exits.run(run, name, exit_timeout)
            if thread is None:
                self._journal.taint("exit-timeout", name, f"exit did not return within "
                                    f"{exit_timeout:g}s; carried on without it")
                self.check_intact(name)
                return None
        if failure:
            self._journal.taint("exit-failed", name, f"exit raised {failure[0]}")
        self.check_intact(name)
        return thread

    def close(self) -> None:
        """The host is closed: end its spare exit thread; every verdict is in on return."""
        self._exits.close()
        self.judge.close()

    def check_intact(self, name: str) -> None:
        """A module may rebind livemod's names or patch its classes: put them back."""
        changed = BASELINE[0].restore() if BASELINE else []
        if changed:
            self._journal.taint("livemod-tampered", name, f"module changed "
                                f"{', '.join(changed)}; restored")
