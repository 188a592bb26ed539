"""The journal: the only writer of a module instance's state, and the host's record of what
happened (subscribers, event listeners, the event log, taints, counts, leak watches).

Every state change goes through :meth:`Journal.move_unlocked` (or :meth:`Journal.transition`,
which also notifies): it checks the move against :data:`MOVES`, a fixed table of the legal
transitions, and raises :class:`IllegalTransition` for any other -- a bug in livemod, never
a user error, so it is loud. Writing the state and telling subscribers are two steps on
purpose: a writer that must change the state together with other things under the host
lock (an unpublish, an upgrade's switch) moves while holding it and notifies after
releasing it, because subscribers are user code and never run under the lock.

The journal shares the module table's lock, which protects (besides the table): 1) each
instance's ``state`` and ``state_since``; 2) ``_subscribers``, ``_listeners``, ``_events``,
``_taints``, ``_counts`` and ``_watches`` here.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Final, final

from ._instance import Instance
from ._leaks import LeakWatch
from ._records import Event, Taint
from ._state import State

__all__ = ["MOVES", "IllegalTransition", "Journal", "Notice", "Subscriber"]

_log = logging.getLogger("livemod")

Subscriber = Callable[[str, "State | None", State], object]

#: Every legal move of an instance's state, named after what makes it (design.md,
#: "Lifecycle"). An upgrade needs no moves of its own: the old version goes LIVE -> GOING and
#: the new one COMING -> LIVE in the same hold of the lock; a new version that fails goes
#: LOADING/COMING -> GONE, and an old one that drains goes GOING -> GONE as for rmmod.
MOVES: Final[Mapping[tuple[State, State], str]] = MappingProxyType({
    (State.LOADING, State.COMING): "body ran: init starts",
    (State.LOADING, State.GONE): "body failed: discarded",
    (State.COMING, State.LIVE): "init returned: published (or switched in by an upgrade)",
    (State.COMING, State.GONE): "init failed (or an upgrade was abandoned): discarded",
    (State.LIVE, State.GOING): "unpublished by rmmod (or switched out by an upgrade)",
    (State.GOING, State.LIVE): "unload timed out: republished",
    (State.GOING, State.GONE): "quiet: exit and managed undo ran",
})

#: Event kinds counted for ``statistics()``.
_COUNTED: Final = ("load", "unload", "load-failed", "unload-refused")
_EVENTS_KEPT: Final = 1000

#: A move made under the lock, to be told to subscribers once it is released.
Notice = tuple[Instance, "State | None", State]


class IllegalTransition(AssertionError):
    """livemod tried a state move that is not in ``MOVES``: a bug in livemod itself."""


@final
class Journal:
    """State moves, notifications, the event log, taints and counts of one host."""

    __slots__ = ("_counts", "_events", "_listeners", "_lock", "_subscribers", "_taints",
                 "_watches", "owed")

    def __init__(self, lock: threading.Lock) -> None:
        self._lock = lock
        self._subscribers: list[Subscriber] = []
        self._listeners: list[Callable[[Event], object]] = []
        self._events: deque[Event] = deque(maxlen=_EVENTS_KEPT)
        self._taints: list[Taint] = []
        self._watches: list[LeakWatch] = []
        self._counts = dict.fromkeys(_COUNTED, 0)
        # Waits for the leak verdicts still owed to the record (set by the host's LeakJudge,
        # which judges off the unload's path); every reader below calls it first.
        self.owed: Callable[[], None] = lambda: None

    # ----------------------------------------------------------------------- states

    def move_unlocked(self, inst: Instance, new: State) -> Notice:
        """Write ``inst.state`` (caller holds the lock); return what to ``notify`` later."""
        old = inst.state
        if (old, new) not in MOVES:
            raise IllegalTransition(
                f"livemod bug: module {inst.name!r} cannot go from {old.name} to {new.name} "
                f"(legal: {', '.join(f'{a.name}->{b.name}' for a, b in MOVES)})"
            )
        inst.state = new
        inst.state_since = time.monotonic()
        return inst, old, new

    def transition(self, inst: Instance, new: State, *, veto: bool = False) -> None:
        """Move ``inst`` to ``new`` and tell the subscribers (see ``notify`` for ``veto``)."""
        with self._lock:
            notice = self.move_unlocked(inst, new)
        self.notify(notice, veto=veto)

    def notify(self, notice: Notice, *, veto: bool = False) -> None:
        """Tell every subscriber; with ``veto`` a failing one raises, else it is logged."""
        inst, old, new = notice
        with self._lock:
            subscribers = list(self._subscribers)
        for callback in subscribers:
            try:
                callback(inst.name, old, new)
            except Exception:
                if veto:
                    raise
                _log.exception("livemod subscriber %r failed on %s -> %s", callback, old, new)

    # ---------------------------------------------------------------- subscriptions

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        return self._listen(self._subscribers, callback)

    def on_event(self, listener: Callable[[Event], object]) -> Callable[[], None]:
        return self._listen(self._listeners, listener)

    def _listen(self, callbacks: list[Any], callback: Any) -> Callable[[], None]:
        with self._lock:
            callbacks.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in callbacks:
                    callbacks.remove(callback)

        return unsubscribe

    # ------------------------------------------------------------ events and taints

    def event(self, kind: str, module: str, message: str, **data: object) -> None:
        event = Event(time.time(), kind, module, message, MappingProxyType(data))
        with self._lock:
            self._events.append(event)
            if kind in self._counts:
                self._counts[kind] += 1
            listeners = list(self._listeners)
        _log.info("%s: %s", module, message)
        for listener in listeners:
            try:
                listener(event)
            except Exception:
                _log.exception("livemod event listener %r failed", listener)

    def taint(self, flag: str, module: str, reason: str) -> None:
        with self._lock:
            self._taints.append(Taint(flag, module, time.time(), reason))
        self.event("taint", module, f"tainted {flag}: {reason}", flag=flag)

    def events(self) -> list[Event]:
        self.owed()
        with self._lock:
            return list(self._events)

    def taints(self) -> tuple[Taint, ...]:
        self.owed()
        with self._lock:
            return tuple(self._taints)

    def taints_unlocked(self) -> list[Taint]:
        return self._taints

    def counts_unlocked(self) -> Mapping[str, int]:
        return self._counts

    # ----------------------------------------------------------------------- leaks

    def add_leak(self, watch: LeakWatch) -> None:
        with self._lock:
            self._watches.append(watch)

    def leak_watches(self) -> list[LeakWatch]:
        """The watches whose objects are still alive (the others are dropped)."""
        self.owed()
        with self._lock:
            self._watches = [w for w in self._watches if w.survivors()]
            return list(self._watches)

    def leak_count_unlocked(self) -> int:
        return len(self._watches)
