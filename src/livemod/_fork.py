"""What happens to livemod's objects across ``fork()``.

A ``Host`` inherited by a child process is only half alive there: its module table says
LIVE, but the modules' threads, the control server's selector thread and any lock held by
another thread at the moment of the fork did not come along. Changing modules in the child
would run ``exit`` code against state that belongs to the parent, and closing an inherited
control server would unlink the parent's socket. So:

- before a fork, every tracked object's short-held lock is taken (the host's ``_lock`` is
  never held while user code runs, so this is bounded), and released again on both sides,
  so the child never inherits it held by a thread that does not exist there;
- in the child, every tracked object is told it was inherited (``_at_fork_child``): hosts
  refuse changes from then on (``HostForked``), control servers close their inherited
  file descriptors without unlinking anything.

Objects are tracked weakly; ``os.register_at_fork`` is called once, at import.
"""

from __future__ import annotations

import os
import threading
import weakref
from typing import Protocol

__all__ = ["ForkAware", "track"]


class ForkAware(Protocol):
    def _at_fork_before(self) -> None: ...
    def _at_fork_parent(self) -> None: ...
    def _at_fork_child(self) -> None: ...


_tracked: weakref.WeakSet[ForkAware] = weakref.WeakSet()
_guard = threading.Lock()  # protects: _tracked (adds) and _forking
_forking: list[ForkAware] = []  # what _before prepared, so both sides undo the same


def track(obj: ForkAware) -> None:
    """Tell ``obj`` about forks from now on (until it is garbage)."""
    with _guard:
        _tracked.add(obj)


def _before() -> None:
    _guard.acquire()
    _forking[:] = sorted(_tracked, key=id)  # one order everywhere: no lock-order inversion
    for obj in _forking:
        obj._at_fork_before()


def _after_parent() -> None:
    for obj in reversed(_forking):
        obj._at_fork_parent()
    _forking.clear()
    _guard.release()


def _after_child() -> None:
    for obj in reversed(_forking):
        obj._at_fork_child()
    _forking.clear()
    _guard.release()


os.register_at_fork(before=_before, after_in_parent=_after_parent, after_in_child=_after_child)
