"""Running a module's ``exit`` on a thread of its own that was started before it was needed.

Why a thread at all: ``exit`` is module code and may hang, so the host bounds it with
``exit_timeout`` and goes on without it (taint ``exit-timeout``). Why not a new thread for
each exit, as before: starting one cost the unloading thread ~0.3-0.4 ms of CPU and two
GIL hand-offs (``Thread.start`` waits until the new thread runs), the largest part of an
idle rmmod. Why not one worker that runs every exit: whatever an exit leaves in its
thread's own state -- a library's ``threading.local``, the thread's context variables --
would outlive the module on that thread, and the leak check would rightly call the module
leaked (a thread's locals and context die with the thread).

So each exit still runs on a fresh thread that runs nothing else, but a *spare* one,
started ahead of need: a host keeps one parked thread; an exit hands its function over
(one lock released: no thread start on the unloading thread); the thread runs it, tells
the unloader, waits until the operation that unloads is done (``resume``, at the end of
the teardown), then starts its own successor and ends, taking whatever the exit left in
its thread-local state and its context with it. Starting a thread needs the GIL several
times over, and the unloader must not pay for that: when the successor was started as soon
as the unloader ran again, the start competed with the rest of the unload (scrub, unwire)
for the GIL, which cost an idle rmmod or replace about 0.05-0.1 ms of wall time. An
operation that comes right after, before the successor is parked, waits a moment for it
rather than start a thread of its own.

A leak check must not look before that state is gone, so it waits for the exit's thread
to end -- on the leak judge's thread, not the unloader's: ``run`` returns the thread, the
teardown puts it on the module's leak watch, and the judge joins it before it collects. (It
was joined on the unloader's path once, on a thread started for each exit: under 8
hammering threads, the start and the join were two more GIL hand-offs in every rmmod.)

A spare parks for at most ``IDLE`` seconds, then ends: a host nobody closes keeps no
thread for good (its next exit starts a fresh one, as before). ``close`` ends it at once.
After a ``fork`` the spare does not exist in the child (``is_alive`` is false there), and
a fresh one is started.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import Final, final

__all__ = ["COMING_WAIT", "IDLE", "ExitRunner"]

#: Seconds a spare thread waits for an exit before it ends.
IDLE: Final = 2.0
#: Seconds an exit waits for the successor a finished exit's thread is starting, before it
#: starts a thread of its own.
COMING_WAIT: Final = 0.05


@final
class _Spare:
    """One parked thread and the two locks it is driven by (both start held)."""

    __slots__ = ("ack", "done", "go", "job", "thread")

    def __init__(self) -> None:
        self.go = threading.Lock()  # released by the unloader once ``job`` is set
        self.go.acquire()
        self.done = threading.Lock()  # released by the thread once ``job`` returned
        self.done.acquire()
        self.ack = threading.Lock()  # released once the unload is done (resume)
        self.ack.acquire()
        self.job: Callable[[], None] | None = None
        self.thread: threading.Thread | None = None


@final
class ExitRunner:
    """A host's spare exit thread (see the module docstring)."""

    __slots__ = ("__weakref__", "_closed", "_coming", "_held", "_lock", "_spare")

    def __init__(self) -> None:
        self._lock = threading.Lock()  # protects: _spare, _closed, _held, _coming
        self._spare: _Spare | None = None
        self._closed = False
        self._held: list[_Spare] = []  # ran an exit; wait for ``resume`` to go on
        self._coming: threading.Event | None = None  # set once a resumed one parked its successor

    def run(self, job: Callable[[], None], label: str, timeout: float
            ) -> threading.Thread | None:
        """Run ``job`` (which must not raise) on a thread of its own; the thread, once
        ``job`` returned, or None if it did not return within ``timeout`` seconds (it goes
        on running; the caller goes on). The thread ends soon after ``job`` returned (see
        the module docstring): join it before judging what ``job`` left behind."""
        with self._lock:
            spare, self._spare = self._spare, None
            coming = self._coming
        if spare is None and coming is not None:  # a successor is on its way: take it
            coming.wait(COMING_WAIT)
            with self._lock:
                spare, self._spare = self._spare, None
        thread = spare.thread if spare is not None else None
        if spare is None or thread is None or not thread.is_alive():
            spare = self._start()  # none parked (the first exit, after IDLE, after a fork)
            thread = spare.thread
            assert thread is not None
        thread.name = f"livemod-exit-{label}"
        spare.job = job
        spare.go.release()
        if not spare.done.acquire(timeout=timeout):
            return None
        with self._lock:
            self._held.append(spare)
        return thread

    def resume(self) -> None:
        """The operation that ran exits is done: their threads may start their successor
        and end (see the module docstring)."""
        with self._lock:
            held, self._held = self._held, []
            if held and self._coming is None:
                self._coming = threading.Event()
        for spare in held:
            spare.ack.release()

    def close(self) -> None:
        """End the parked thread, if any; no spare is started from now on."""
        with self._lock:
            self._closed = True
            spare, self._spare = self._spare, None
            held, self._held = self._held, []
        for done in held:
            done.ack.release()
        if spare is not None and spare.thread is not None:
            spare.go.release()  # with no job: it ends
            spare.thread.join(IDLE)

    def _start(self) -> _Spare:
        spare = _Spare()
        spare.thread = threading.Thread(target=_park, args=(weakref.ref(self), spare),
                                        name="livemod-exit-spare", daemon=True)
        spare.thread.start()
        return spare

    def _replace(self) -> None:
        """Called by a thread whose exit returned: park a successor unless one is there."""
        with self._lock:
            if not (self._closed or self._spare is not None):
                self._spare = self._start()
            coming, self._coming = self._coming, None
        if coming is not None:
            coming.set()


def _park(runner_ref: weakref.ref[ExitRunner], spare: _Spare) -> None:
    # The runner only weakly: a parked thread must not keep a dropped host's runner alive.
    if not spare.go.acquire(timeout=IDLE):
        runner = runner_ref()
        if runner is None:
            return  # nobody can be handing a job over: only a live runner does
        with runner._lock:
            if runner._spare is spare:
                runner._spare = None  # still parked and unused: retire
                return
        del runner
        spare.go.acquire()  # taken just now: the job follows at once
    job, spare.job = spare.job, None
    if job is None:
        return  # closed
    try:
        job()
    finally:
        del job  # before telling the unloader: this frame must not hold the module's exit
        spare.done.release()
    # Start the successor only once the operation is done (``resume``): starting a thread
    # needs the GIL, and the unload would wait for it.
    spare.ack.acquire(timeout=IDLE)
    runner = runner_ref()
    if runner is not None:
        runner._replace()
