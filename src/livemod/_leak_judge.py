"""Leak verdicts off the unload's path: one judge per host, batched, waited for by readers.

Why: a leak verdict needs a full ``gc.collect()`` (the module's namespaces are full of
cycles), and that collection was 90-96% of an idle rmmod. Under threads hammering a hook it
is far worse: the collector holds the GIL throughout, then waits to win it back at every
hand-off, and an rmmod took 120-300 ms of which livemod's own work was about 1 ms. Nobody
who unloads a module waits for its verdict -- only those who read verdicts do.

How:

- the teardown hands a :class:`LeakWatch` (taken while the namespaces were still alive) to
  :meth:`LeakJudge.submit` after GONE was announced, and returns at once;
- one worker thread per host (started on first use, and again in a forked child) takes
  every watch that arrived within ``_BATCH`` seconds of the first, runs *one* collection for
  the whole batch, and judges each watch as the teardown used to: ``module-leaked`` taint
  and ``leaks()`` entry, or an "held outside the GC" event;
- whoever reads verdicts calls :meth:`settle` first: the journal's readers (``leaks()``,
  ``tainted``, ``events()``), ``statistics()``, and the end of ``close()``. It wakes the
  worker (no batching delay) and waits until every watch submitted before the call is
  judged, so ``rmmod(); leaks()`` sees what it always saw. It returns at once when nothing
  is pending, and at once on the worker itself (a listener reading the log from inside a
  verdict would wait for itself).

The worker is a daemon; it ends when its host is closed, or after ``_IDLE`` seconds with
nothing to judge, and the next submit starts another. A queued watch holds only weak
references to the module's objects, so it cannot be the leak it reports.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable
from typing import Final, final

from . import _fork, _leaks
from ._journal import Journal
from ._records import brief
from ._switching import collecting

__all__ = ["LeakJudge"]

_log = logging.getLogger("livemod")

#: Seconds the worker waits for more watches after the first, so a burst of unloads (a
#: ``close()``, a cascade, a service-wide rmmod) pays for one collection.
_BATCH: Final = 0.05

#: Seconds an idle worker lives on: long enough that unloads in a row never pay for a thread
#: start (a GIL hand-off, tens of ms under load), short enough that hosts left open do not
#: keep one thread each.
_IDLE: Final = 10.0

#: Seconds a verdict waits for another thread's garbage collection to end.
_JUDGE_WITHIN: Final = 30.0

#: Seconds a reader waits for pending verdicts before answering without them (logged).
_SETTLE_WITHIN: Final = 60.0


@final
class LeakJudge:
    """Judges a host's leak watches on a worker thread; see the module docstring."""

    __slots__ = ("__weakref__", "_cond", "_done", "_journal", "_pending", "_submitted",
                 "_urgent", "_worker", "closed")

    def __init__(self, journal: Journal) -> None:
        self._journal = journal
        self._cond = threading.Condition(threading.Lock())  # guards every field below
        self._pending: list[_leaks.LeakWatch] = []
        self._submitted = 0  # watches ever submitted
        self._done = 0  # of those, judged (in order: a batch is all of the oldest ones)
        self._urgent = False  # a reader waits: skip the batching delay
        self._worker: threading.Thread | None = None
        self.closed = False  # the host closed: the worker ends once nothing is pending
        journal.owed = self.settle
        _fork.track(self)

    def submit(self, watch: _leaks.LeakWatch) -> None:
        """Judge ``watch`` soon, on the worker."""
        with self._cond:
            self._pending.append(watch)
            self._submitted += 1
            self._start_unlocked()
            self._cond.notify_all()

    def settle(self, timeout: float = _SETTLE_WITHIN) -> None:
        """Wait until every watch submitted so far is judged (bounded; see the docstring)."""
        with self._cond:
            target = self._submitted
            if self._done >= target or threading.current_thread() is self._worker:
                return
            self._urgent = True
            self._start_unlocked()
            self._cond.notify_all()
            if not self._cond.wait_for(lambda: self._done >= target, timeout):
                _log.error("leak verdicts for %d unloaded module(s) took over %gs; "
                           "answering without them", target - self._done, timeout)

    def close(self) -> None:
        """The host closed: judge what is pending, then let the worker end."""
        self.settle()
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def _start_unlocked(self) -> None:
        if self._worker is None or not self._worker.is_alive():
            self._worker = threading.Thread(target=self._run, name="livemod-leak-judge",
                                            daemon=True)
            self._worker.start()

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._pending or self.closed, _IDLE)
                if not self._pending:  # idle, or the host closed: a submit starts another
                    if self._worker is threading.current_thread():
                        self._worker = None
                    return
                if not self._urgent:  # let a burst of unloads share the collection
                    self._cond.wait_for(lambda: self._urgent, _BATCH)
                batch, self._pending = self._pending, []
                self._urgent = False
            try:
                self._judge_batch(batch)
            finally:
                with self._cond:
                    self._done += len(batch)
                    self._cond.notify_all()
                del batch

    def _judge_batch(self, batch: list[_leaks.LeakWatch]) -> None:
        for watch in batch:
            thread, watch.exit_thread = watch.exit_thread, None
            if thread is not None:
                thread.join(_JUDGE_WITHIN)  # its thread-local state dies with it
            del thread
        with collecting():  # the collector holds the GIL throughout: see _switching
            gc.collect()
        for watch in batch:
            try:
                if watch.survivors():
                    self._judge(watch)
            except Exception as exc:  # GONE long ago: say so, never undo anything
                _log.exception("module %r: the leak check failed", watch.name)
                self._journal.taint("leak-check-failed", watch.name,
                                    f"leak check raised {brief(exc)}")
                del exc

    def _judge(self, watch: _leaks.LeakWatch) -> None:
        # Our collection returns at once when another thread is collecting: decide once
        # that one is over, and collect again (a cycle may have been half found).
        _wait_until(lambda: not _leaks.other_thread_collecting(), _JUDGE_WITHIN)
        gc.collect()
        if not watch.survivors():
            return
        watch.explain()
        if watch.held_outside_gc():  # only native code holds them: not a failure
            self._journal.event(
                "unload", watch.name, f"{len(watch.survivors())} object(s) held outside "
                f"the GC by native code ({', '.join(watch.native)})",
                held_outside_gc=watch.chains)
            return
        self._journal.add_leak(watch)
        self._journal.taint("module-leaked", watch.name, "objects still alive after unload")

    # ------------------------------------------------------------------ fork (see _fork)

    def _at_fork_before(self) -> None:
        self._cond.acquire()

    def _at_fork_parent(self) -> None:
        self._cond.release()

    def _at_fork_child(self) -> None:
        # The worker did not come along; pending watches are judged by a new one, started
        # by the next submit or settle.
        self._cond.release()
        self._worker = None


def _wait_until(ready: Callable[[], bool], within: float) -> None:
    """Poll ``ready`` (it is a gc phase, which has no event to wait on) for ``within`` s."""
    deadline = time.monotonic() + within
    while not ready() and time.monotonic() < deadline:
        time.sleep(0.01)
