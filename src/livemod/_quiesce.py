"""Finding a module's code running outside hook dispatch, and waiting for it to stop.

Dispatch keeps its own read-side counters (see ``_hooks``). Code of a module can also run
outside a dispatch: a thread it started without the context, a direct call to one of its
exports, a callback it handed out. Tracking every such entry would cost every call; instead,
as the kernel's livepatch consistency model does, unload looks at what is running *now*:
every thread's stack (``sys._current_frames()``) -- and, in ``_aio``, every task of the
host's event loop -- for frames
whose globals are one of the module's namespaces. This costs nothing until an unload asks.

It cannot see a thread that holds a module function and has not yet entered it; that is what
holds (``host.hold``) are for.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Collection
from types import FrameType

__all__ = ["current_thread_in", "describe_frame", "running_in"]


def describe_frame(frame: FrameType) -> str:
    code = frame.f_code
    return f"{os.path.basename(code.co_filename)}:{frame.f_lineno} in {code.co_name}"


def _first_frame_in(frame: FrameType | None, namespaces: Collection[int]) -> FrameType | None:
    # The innermost frame is the most useful to show a person: it is where the code is now.
    while frame is not None:
        if id(frame.f_globals) in namespaces:
            return frame
        frame = frame.f_back
    return None


def running_in(namespaces: Collection[int], *, exclude: Collection[int] = ()) -> list[str]:
    """Describe each thread that is running code whose globals are in ``namespaces``.

    Args:
        namespaces: ``id()`` of each globals dict of the module (package and submodules).
        exclude: thread idents to leave out (the module's own managed threads).

    Returns:
        One string per thread, e.g. ``"thread 'poller' at leaky.py:12 in poll"``.
    """
    names = {t.ident: t.name for t in threading.enumerate()}
    found = []
    for ident, frame in sys._current_frames().items():
        if ident in exclude:
            continue
        hit = _first_frame_in(frame, namespaces)
        if hit is not None:
            found.append(f"thread {names.get(ident, ident)!r} at {describe_frame(hit)}")
    del frame
    return found


def current_thread_in(namespaces: Collection[int]) -> str | None:
    """Where the calling thread is inside the module, if it is: a self-unload."""
    hit = _first_frame_in(sys._getframe(1), namespaces)
    return None if hit is None else describe_frame(hit)
