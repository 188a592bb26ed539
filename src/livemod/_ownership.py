"""Which process a host belongs to, and what it refuses once inherited by a fork.

See :mod:`._fork` for why: in a child the host's module table is the parent's, so every
change raises ``HostForked``; the table's lock is taken around the fork so that the child
never inherits it held by a thread that does not exist there.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Iterable
from typing import Any, final

from . import _fork
from .errors import HostForked

__all__ = ["Ownership", "guard"]


@final
class Ownership:
    """``pid``: the process that built the host; ``forked``: this is a child's copy."""

    __slots__ = ("__weakref__", "_lock", "forked", "pid")

    def __init__(self, lock: threading.Lock) -> None:
        self.pid = os.getpid()
        self.forked = False
        self._lock = lock
        _fork.track(self)

    def check(self) -> None:
        """Raise ``HostForked`` in a process the host does not belong to."""
        if self.forked:
            raise HostForked(
                f"this host belongs to pid {self.pid}; build a new one in the child "
                f"(pid {os.getpid()}): it cannot change modules here", owner_pid=self.pid,
            )

    def _at_fork_before(self) -> None:
        self._lock.acquire()  # never held while user code runs: bounded

    def _at_fork_parent(self) -> None:
        self._lock.release()

    def _at_fork_child(self) -> None:
        self._lock.release()
        self.forked = True


def guard(cls: type, names: Iterable[str]) -> None:
    """Make each method ``names`` of ``cls`` check ``self._table.owner`` first: every change
    refuses in a process the host does not belong to (queries still answer). ``close``
    there does nothing instead: the modules are the parent's, none of their code runs."""
    for name in names:
        setattr(cls, name, _checked(getattr(cls, name)))


def _checked(method: Any) -> Any:
    @functools.wraps(method)
    def checked(self: Any, *args: Any, **kwargs: Any) -> Any:
        owner = self._table.owner
        if method.__name__ == "close" and owner.forked:
            return None
        owner.check()
        return method(self, *args, **kwargs)

    return checked
