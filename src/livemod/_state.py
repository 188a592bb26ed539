"""The module lifecycle states (design.md, "Lifecycle")."""

from __future__ import annotations

import enum

__all__ = ["State"]


class State(enum.Enum):
    """Where a module is in its life. Every operation checks the state first."""

    #: Located, manifest read, dependencies held, body executing in a fresh namespace.
    LOADING = "loading"
    #: ``init`` is running; everything it registers is staged, none of it visible.
    COMING = "coming"
    #: Every staged registration is published; calls reach the module.
    LIVE = "live"
    #: Unpublished; new holds refused; waiting for calls in flight, holds and pins to end.
    GOING = "going"
    #: Exit and managed undo have run; out of the module table; leak check done.
    GONE = "gone"

    def __str__(self) -> str:
        return self.name
