"""Finding a module's code running outside hook dispatch, and waiting for it to stop.

Dispatch keeps its own read-side counters (see ``_hooks``). Code of a module can also run
outside a dispatch: a thread it started without the context, a direct call to one of its
exports, a callback it handed out. Tracking every such entry would cost every call; instead,
as the kernel's livepatch consistency model does, unload looks at what is running *now*:
every thread's stack -- and, in ``_aio``, every task of the event loops in use -- for code of
the module. This costs nothing until an unload asks.

Reading another thread's stack from Python is not safe: walking ``f_back`` of a frame from
``sys._current_frames()`` while its thread runs can crash CPython 3.11 (stale interpreter
frames; the stress tests, which switch threads every microsecond, hit it). So the stacks of
other threads are read by ``faulthandler``, which walks them in C without letting any thread
run, and are matched by file name. Two consequences: a thread deeper than 100 frames or past
the 100th thread is not seen, and during a reload from the same file the old and the new
version cannot be told apart, so the old one waits until no thread is in that file (it is
then "removal pending" and finished later, never early). The calling thread's own stack is
walked directly (it cannot change under us), by namespace.

It cannot see a thread that holds a module function and has not yet entered it; that is what
holds (``host.hold``) are for.
"""

from __future__ import annotations

import faulthandler
import mmap
import os
import re
import sys
import tempfile
import threading
from collections.abc import Collection
from types import FrameType
from typing import Final

__all__ = ["Frame", "current_thread_in", "describe_frame", "running_in", "thread_stacks"]

_THREAD: Final = re.compile(r"^(?:Current thread|Thread) 0x([0-9a-f]+)")
_FRAME: Final = re.compile(r'^  File "(.*)", line (\d+|\?\?\?) in (.*)$')

#: One frame as faulthandler shows it: file, line, function.
Frame = tuple[str, str, str]


def describe_frame(frame: FrameType) -> str:
    code = frame.f_code
    return f"{os.path.basename(code.co_filename)}:{frame.f_lineno} in {code.co_name}"


class _Scratch:
    """Where faulthandler writes its dumps: a sparse file mapped into memory.

    Every system call on a file object releases the GIL, and under load getting it back
    costs a switch interval or more; so dumps are appended to a file that stays open and is
    read through ``mmap`` (no system call). Each dump is found between the end of the last
    one and the first NUL byte (a dump contains none). The offset is rewound only when the
    file is full.
    """

    SIZE: Final = 64 * 1024 * 1024

    def __init__(self) -> None:
        self.file = tempfile.TemporaryFile()  # noqa: SIM115 - kept for the process
        self.file.truncate(self.SIZE)
        self.map = mmap.mmap(self.file.fileno(), self.SIZE)
        self.end = 0

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


_scratch: list[_Scratch] = []
_scratch_lock: Final = threading.Lock()


def thread_stacks() -> dict[int, list[Frame]]:
    """Every thread's stack, innermost frame first, read in one step by faulthandler."""
    with _scratch_lock:
        if not _scratch:
            _scratch.append(_Scratch())
        text = _scratch[0].dump()
    stacks: dict[int, list[Frame]] = {}
    current: list[Frame] | None = None
    for line in text.splitlines():
        head = _THREAD.match(line)
        if head is not None:
            current = stacks.setdefault(int(head.group(1), 16), [])
            continue
        frame = _FRAME.match(line)
        if frame is not None and current is not None:
            current.append((frame.group(1), frame.group(2), frame.group(3)))
    return stacks


def running_in(files: Collection[str], *, exclude: Collection[int] = ()) -> list[str]:
    """Describe each other thread running code from the module's ``files``.

    Args:
        files: the absolute paths of the module's source files.
        exclude: thread idents to leave out (the module's own managed threads).

    Returns:
        One string per thread, e.g. ``"thread 'poller' at leaky.py:12 in poll"``, naming
        the innermost frame in the module (where it is now).
    """
    if not files:
        return []
    names = {t.ident: t.name for t in threading.enumerate()}
    me = threading.get_ident()
    found = []
    for ident, frames in thread_stacks().items():
        if ident in exclude or ident == me:
            continue
        for filename, line, function in frames:
            if filename in files:
                where = f"{os.path.basename(filename)}:{line} in {function}"
                found.append(f"thread {names.get(ident, ident)!r} at {where}")
                break
    return found


def current_thread_in(namespaces: Collection[int]) -> str | None:
    """Where the calling thread is inside the module, if it is: a self-unload."""
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        if id(frame.f_globals) in namespaces:
            return describe_frame(frame)
        frame = frame.f_back
    return None
