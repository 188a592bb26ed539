"""Slots in atexit's table for module code's direct registrations, reused across loads.

On CPython 3.11-3.13 atexit keeps its callbacks in a C array that only grows:
``atexit.unregister`` frees the callback but leaves its slot, and a new registration always
takes a fresh slot at the end. A module that registers one callback per load (certifi's
``where()`` does, on first call) would grow the table by one slot per load/unload cycle, for
the life of the process -- small, but a leak that never stops.

So a trampoline (``_trampolines.Trampoline``) registered for a module's callback is not
unregistered at unload: it is *detached* (it lets go of the module's function and from then
on does nothing) and *parked* in its slot. The next registration by module code re-arms a
parked trampoline instead of taking a new slot -- but only one that sits above every live
callback in the table, so that the re-armed callback runs exactly where a fresh one would:
atexit runs its table last-in-first-out, and nothing live lies between it and the end. Of
the parked slots at the top it takes the lowest, so that the next registration finds the
ones above it still free (a module registering k callbacks per load reuses the same k).
``atexit._ncallbacks()`` (the table's length, dead slots included) is how the top is known:
a trampoline registered when the table had ``n`` slots sits at ``n``, and it is at the top
while the table still has ``n + 1``.

Where the table does shrink (a probe at import tells) or ``_ncallbacks`` is
missing, a detached trampoline is unregistered as before and nothing is parked. A
registration made meanwhile through a reference to the real ``atexit.register`` taken before
livemod started is counted too (it lengthens the table), so it is never jumped over.
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import Callable
from typing import Any, Final

__all__ = ["park", "parked", "take"]

_lock = threading.Lock()  # protects: _parked
#: slot index -> the detached trampoline in it.
_parked: dict[int, Any] = {}

_ncallbacks: Final[Callable[[], int] | None] = getattr(atexit, "_ncallbacks", None)


def _table_only_grows() -> bool:
    if _ncallbacks is None:
        return False

    def probe() -> None:
        return None

    before = _ncallbacks()
    atexit.register(probe)
    atexit.unregister(probe)
    return _ncallbacks() > before


#: Decided once, at import: one probe slot is the price of knowing.
PARKING: Final = _table_only_grows()


def take(register: Callable[[Any], object], make: Callable[[], Any],
         rearm: Callable[[Any], None]) -> tuple[Any, int | None]:
    """A trampoline in atexit's table for a new registration: a parked one re-armed with
    ``rearm`` if one is at the top, else ``make()`` registered with ``register`` (the real
    ``atexit.register``). Returns the trampoline and its slot (None: slots not tracked)."""
    with _lock:
        if not PARKING or _ncallbacks is None:
            tramp = make()
            register(tramp)
            return tramp, None
        top = _ncallbacks() - 1
        _forget_above(top)
        low = top
        while low in _parked:
            low -= 1
        if low < top:  # slots low+1 .. top are all parked: take the lowest of them
            tramp = _parked.pop(low + 1)
            rearm(tramp)
            return tramp, low + 1
        tramp = make()
        register(tramp)
        return tramp, _ncallbacks() - 1


def park(tramp: Any, slot: int | None, release: Callable[[], bool]) -> None:
    """Take ``tramp`` back: ``release()`` detaches it and says whether it was still the
    caller's to take back (not taken back already, nor re-armed for someone else since).
    It is then parked in ``slot`` if the table only grows, else unregistered."""
    with _lock:
        if not release():
            return
        if slot is not None and PARKING:
            _parked[slot] = tramp
            return
    atexit.unregister(tramp)


def _forget_above(top: int) -> None:
    # atexit._clear() or _run_exitfuncs() empties the table: parked slots past its end are
    # gone, and their trampolines with them.
    for slot in [s for s in _parked if s > top]:
        del _parked[slot]


def parked() -> int:
    """How many slots of atexit's table hold a detached livemod trampoline (for a caller
    counting live callbacks: ``atexit._ncallbacks()`` counts dead slots too)."""
    with _lock:
        if _ncallbacks is not None:
            _forget_above(_ncallbacks() - 1)
        return len(_parked)
