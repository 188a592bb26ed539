"""Finding a module's code running outside hook dispatch, and waiting for it to stop.

Dispatch keeps its own read-side counters (see ``_hooks``). Code of a module can also run
outside a dispatch: a thread it started without the context, a direct call to one of its
exports, a callback it handed out. Tracking every such entry would cost every call; instead,
as the kernel's livepatch consistency model does, unload looks at what is running *now*:
every frame of every thread's stack -- and, in ``_aio``, every task of every running event
loop -- for code whose globals are one of the module's namespaces. This costs nothing until
an unload asks, and has no limit on depth or on the number of threads.

Reading other threads' stacks, and why it is safe here. ``sys._current_frames()`` and each
``f_back`` step create a frame object for another thread's interpreter frame. On CPython
3.11 creating any GC-tracked object may run a garbage collection *inside the allocation*
(3.12 moved collections to the eval breaker, gh-97922). A collection runs finalizers and
weakref callbacks, that is Python code, so the interpreter may switch to the very thread
whose frame is being wrapped; if that thread returns from the frame, the new frame object
points at a popped ``_PyInterpreterFrame`` in a freed or reused data-stack chunk, and a
later read crashes (the dispatch stress test, switching threads every microsecond, hit it
one run in five; compare gh-97002, the same allocation-time collection creating two frame
objects for one frame, and gh-99729, frame objects made during frame teardown, both fixed in
3.11). So the walk runs with automatic collection off: no object allocation can then run
Python code, every step is one uninterrupted C call under the GIL, and a frame object we
hold stays valid when its thread moves on (CPython copies the frame into the object, with
its ``f_back``, when the frame exits). The stack we read is therefore the one the thread
had when ``sys._current_frames()`` was taken, frame by frame. A collection requested by
another thread (``gc.collect()``) still runs, but never inside one of our steps.

On a free-threaded build (3.13t with the GIL off) no thread waits for us: following
``f_back`` of a running thread's frame races with that thread popping it (frame objects are
made from its live interpreter frames), and only ``sys._current_frames()`` itself stops the
world. So there the stacks are read by ``faulthandler``, which walks them in C, and frames
are matched by file name. That reader shows at most 100 frames of each thread (silently: a
thread with more shows exactly 100) and at most 100 threads (then a line ``...``). What it
cannot show is never taken as quiet: a thread showing 100 frames, and every thread past the
100th, count as possibly inside the module, each named with the reason, so an unload waits
for them to unwind or fails with ModuleBusy -- later, never early. A file cannot tell a
version from its reload from the same path: there the managed threads of *other* loaded
versions (registered by :func:`note_managed`) are known to run their own version's code and
are left out, which lets a threaded module reload from its own file.

Telling versions apart. Each loaded version has its own namespace (a fresh globals dict
per module and submodule), and a frame's ``f_globals`` is the namespace of the code it
runs. So a reload from the same file is no problem: v2's threads run in v2's namespace,
v1's in v1's, and only v1's are waited for.

The calling thread's own stack is walked directly (it cannot change under us). A thread
that holds a module function and has not yet entered it cannot be seen; that is what holds
(``host.hold``) are for.
"""

from __future__ import annotations

import faulthandler
import gc
import mmap
import os
import re
import sys
import tempfile
import threading
import weakref
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Final, TypeVar

from ._hooks import dispatching_into

__all__ = [
    "Frame", "current_thread_in", "describe_frame", "note_managed", "running_in",
    "thread_stacks",
]

_T = TypeVar("_T")

#: One frame as a person reads it: file, line, function.
Frame = tuple[str, str, str]

#: Held while a walk has automatic collection off. Protects: the collector's enabled flag
#: between our ``gc.disable()`` and the matching ``gc.enable()`` (two walks at once would
#: otherwise turn it back on under each other).
_walk_lock: Final = threading.Lock()


def describe_frame(frame: FrameType) -> str:
    code = frame.f_code
    return f"{os.path.basename(code.co_filename)}:{frame.f_lineno} in {code.co_name}"


def _gil_on() -> bool:
    # Asked each time: a free-threaded build turns the GIL on when it imports an extension
    # that does not declare itself safe without it.
    is_enabled: Callable[[], bool] | None = getattr(sys, "_is_gil_enabled", None)
    return True if is_enabled is None else is_enabled()


@contextmanager
def _no_collection() -> Iterator[None]:
    """Automatic garbage collection off: see the module docstring for why a walk needs it."""
    with _walk_lock:
        enabled = gc.isenabled()
        gc.disable()
        try:
            yield
        finally:
            if enabled:
                gc.enable()


def _walk_threads(visit: Callable[[int, FrameType], _T], skip: Collection[int]) -> dict[int, _T]:
    """``visit(ident, top frame)`` for every other thread, with collection off throughout.

    ``visit`` may follow ``f_back`` as far as it likes; it must not keep the frames.
    """
    results: dict[int, _T] = {}
    with _no_collection():
        frames = sys._current_frames()
        try:
            for ident, frame in frames.items():
                if ident not in skip:
                    results[ident] = visit(ident, frame)
        finally:
            frames.clear()  # the frames keep their threads' locals alive: drop them now
    return results


def _frames_of(frame: FrameType | None) -> list[Frame]:
    out: list[Frame] = []
    while frame is not None:
        code = frame.f_code
        line = frame.f_lineno
        out.append((code.co_filename, "???" if line is None else str(line), code.co_name))
        frame = frame.f_back
    return out


def thread_stacks() -> dict[int, list[Frame]]:
    """Every thread's stack, innermost frame first: every frame of every thread (on a
    free-threaded build with the GIL off: what ``faulthandler`` shows, see above)."""
    if not _gil_on():
        return _Scratch.stacks()[0]
    return _walk_threads(lambda _ident, frame: _frames_of(frame), ())


def running_in(
    namespaces: Collection[int], files: Collection[str], *, exclude: Collection[int] = ()
) -> list[str]:
    """Describe each other thread running code of the module.

    Args:
        namespaces: ``id()`` of each globals dict of the module (package and submodules):
            a frame runs the module's code when its ``f_globals`` is one of them.
        files: the absolute paths of the module's source files (used only where stacks are
            read by ``faulthandler``: free-threaded builds).
        exclude: thread idents to leave out (the module's own managed threads).

    Returns:
        One string per thread, e.g. ``"thread 'poller' at leaky.py:12 in poll"``, naming
        the innermost frame in the module (where it is now).
    """
    if not namespaces:
        return []
    names = {t.ident: t.name for t in threading.enumerate()}
    skip = {*exclude, threading.get_ident()}
    if not _gil_on():
        return _running_in_files(namespaces, files, names, skip)

    def visit(ident: int, frame: FrameType | None) -> str | None:
        while frame is not None:
            if id(frame.f_globals) in namespaces:
                return f"thread {names.get(ident, ident)!r} at {describe_frame(frame)}"
            frame = frame.f_back
        return None

    return [hit for hit in _walk_threads(visit, skip).values() if hit is not None]


def current_thread_in(namespaces: Collection[int], owner: int | None = None) -> str | None:
    """Where the calling thread is inside the module, if it is: a self-unload.

    Inside means a frame of the module's code, or (with ``owner``, the instance id) a hook
    call counted on a snapshot that includes the module, whatever runs under it now.
    """
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        if id(frame.f_globals) in namespaces:
            return describe_frame(frame)
        if owner is not None:
            hook = dispatching_into(frame, owner)
            if hook is not None:
                return f"a call of its hook {hook!r}"
        frame = frame.f_back
    return None


# ---------------------------------------------------------------- free-threaded builds

_THREAD: Final = re.compile(r"^(?:Current thread|Thread) 0x([0-9a-f]+)")
_FRAME: Final = re.compile(r'^  File "(.*)", line (\d+|\?\?\?) in (.*)$')


#: faulthandler's limits (Python/traceback.c, MAX_FRAME_DEPTH and MAX_NTHREADS).
_MAX_FRAMES: Final = 100

#: Managed threads and the namespaces of the version that started each (free-threaded
#: builds: see the module docstring). Protects: nothing else; one lock for the dict.
_managed_lock: Final = threading.Lock()
_managed: weakref.WeakKeyDictionary[threading.Thread, Callable[[], Collection[int]]] = (
    weakref.WeakKeyDictionary())


def note_managed(thread: threading.Thread, namespaces: Callable[[], Collection[int]]) -> None:
    """Record that ``thread`` runs the code of the version whose namespace ids
    ``namespaces()`` gives (a managed thread, before it starts)."""
    with _managed_lock:
        _managed[thread] = namespaces


def _others_managed(namespaces: Collection[int]) -> set[int]:
    """Idents of running managed threads of versions other than the one in ``namespaces``."""
    with _managed_lock:
        pairs = list(_managed.items())
    return {t.ident for t, of in pairs
            if t.ident is not None and t.is_alive() and not set(of()) & set(namespaces)}


def _running_in_files(
    namespaces: Collection[int], files: Collection[str], names: dict[int | None, str],
    skip: Collection[int],
) -> list[str]:
    stacks, more_threads = _Scratch.stacks()
    skip = {*skip, *_others_managed(namespaces)}
    found = []
    for ident, frames in stacks.items():
        if ident in skip:
            continue
        who = f"thread {names.get(ident, ident)!r}"
        for filename, line, function in frames:
            if filename in files:
                found.append(f"{who} at {os.path.basename(filename)}:{line} in {function}")
                break
        else:
            if len(frames) >= _MAX_FRAMES:
                found.append(f"{who} (its stack is deeper than the {_MAX_FRAMES} frames this "
                             f"free-threaded interpreter lets livemod read: it may be running "
                             f"the module's code further out)")
    if more_threads:
        unseen = [name for tid, name in names.items()
                  if tid is not None and tid not in stacks and tid not in skip]
        found += [f"thread {name!r} (past the {_MAX_FRAMES} threads whose stacks this "
                  f"free-threaded interpreter lets livemod read)" for name in unseen[:3]]
        if len(unseen) > 3:
            found.append(f"{len(unseen) - 3} more threads past the {_MAX_FRAMES}th")
    return found


class _Scratch:
    """Where faulthandler writes its dumps (free-threaded builds only): a sparse file
    mapped into memory, so that reading a dump makes no system call. Each dump is found
    between the end of the last one and the first NUL byte (a dump contains none)."""

    SIZE: Final = 64 * 1024 * 1024
    _one: list[_Scratch] = []
    _lock: Final = threading.Lock()

    def __init__(self) -> None:
        self.file = tempfile.TemporaryFile()  # noqa: SIM115 - kept for the process
        self.file.truncate(self.SIZE)
        self.map = mmap.mmap(self.file.fileno(), self.SIZE)
        self.end = 0

    @classmethod
    def stacks(cls) -> tuple[dict[int, list[Frame]], bool]:
        """The stacks faulthandler shows, and whether it left threads out (past 100)."""
        with cls._lock:
            if not cls._one:
                cls._one.append(cls())
            text = cls._one[0].dump()
        stacks: dict[int, list[Frame]] = {}
        current: list[Frame] | None = None
        more_threads = False
        for line in text.splitlines():
            head = _THREAD.match(line)
            if head is not None:
                current = stacks.setdefault(int(head.group(1), 16), [])
                continue
            if line == "...":
                more_threads = True
                continue
            frame = _FRAME.match(line)
            if frame is not None and current is not None:
                current.append((frame.group(1), frame.group(2), frame.group(3)))
        return stacks, more_threads

    def dump(self) -> str:
        if self.end > self.SIZE - 8 * 1024 * 1024:  # room for the largest dump (100x100)
            self.map[: self.end] = bytes(self.end)
            os.lseek(self.file.fileno(), 0, os.SEEK_SET)
            self.end = 0
        faulthandler.dump_traceback(self.file.fileno(), all_threads=True)
        stop = self.map.find(b"\0", self.end)
        stop = self.SIZE if stop < 0 else stop
        text = self.map[self.end : stop].decode("utf-8", "replace")
        self.end = stop
        return text
