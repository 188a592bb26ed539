"""Starting a new version's managed threads while the old version drains.

Under load every hand-off of the GIL costs the thread that waits for it many switch
intervals: measured on 2 cores with 8 threads calling a hook, a ``Thread.start`` took a
median of 14 ms, because it waits twice -- the new thread must win the GIL to run its
bootstrap, then the starting thread must win it back. An upgrade that started v2's managed
threads itself paid those waits one after another before v1 could begin to drain, and a
reload of a module with two managed threads spent a third of its time there.

So ``commit`` hands the starts to ``start_soon``, which runs them in a thread of its own
while the operation drains and tears down v1 (waiting too, mostly), and waits for them
with ``Starting.wait`` before it returns: when ``replace`` returns, every thread of v2 has
started, as before; only the order relative to v1's drain is no longer fixed (nothing of
v1 waits for v2's threads). The thread is a raw ``_thread`` one, so the operation does not
wait for *its* start either; it runs livemod's own start functions only (``Thread.start``,
``create_task``), which never call ``threading.current_thread`` -- so it never shows up in
``threading.enumerate()`` -- and it never logs: an error is kept and raised by ``wait``.
"""

from __future__ import annotations

import _thread
import threading
from collections.abc import Callable, Sequence
from typing import final

__all__ = ["Starting", "start_soon"]


@final
class Starting:
    """Starts under way in their own thread; ``wait`` until they have run."""

    __slots__ = ("_done", "_error")

    def __init__(self) -> None:
        self._done = threading.Event()
        self._error: BaseException | None = None

    def _run(self, starts: Sequence[Callable[[], None]]) -> None:
        # Every start runs, even after one failed: each is a thread or task of the new
        # version, which serves already and must not lose the rest.
        for start in starts:
            try:
                start()
            except BaseException as exc:  # raised by wait(), in the operation's thread
                if self._error is None:
                    self._error = exc
                del exc
        self._done.set()

    def wait(self) -> None:
        """Block until every start has run; raise the first error one raised."""
        self._done.wait()
        error, self._error = self._error, None
        if error is not None:
            raise error


def start_soon(starts: Sequence[Callable[[], None]]) -> Starting:
    """Run ``starts`` in order, in a thread of their own (none if there is nothing to run)."""
    starting = Starting()
    if starts:
        _thread.start_new_thread(starting._run, (list(starts),))
    else:
        starting._done.set()
    return starting
