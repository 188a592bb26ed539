"""The native copy cache on disk: in use means locked, and the oldest unused copies go.

Every load of a module with native code maps a copy of its extension files
(``native/<sha256>/<n>/<file>`` in livemod's cache folder, ``_native``). Processes reuse
each other's copies, and a library once mapped stays mapped until its process ends, so the
folder would only grow: a new copy per new version, per process that ran at once.

A file is *in use* while some process has it mapped, and that is told by a lock rather than
by reading every process's memory map: a process that maps a copy first takes a shared
``flock`` on it and keeps that descriptor open for its life (the kernel drops the lock when
the process ends, however it ends; a forked child shares it, as it shares the mapping).
The prune takes an exclusive lock without waiting before it removes a file: a copy that is
mapped anywhere is never removed. A loader that opened a file the prune removed meanwhile
sees its descriptor's inode is no longer the path's, and writes the copy again.

The prune keeps the folder within ``LIVEMOD_NATIVE_DISK_MAX_BYTES`` (default 1 GiB) and
``LIVEMOD_NATIVE_DISK_MAX_FILES`` (default 256), removing the least recently used first
(a copy's mtime is set each time a process takes it). It runs after a copy is written;
what is in use is skipped even if that leaves the folder above the bounds.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from typing import Final

__all__ = ["hold", "prune"]

_lock = threading.Lock()  # protects: _held
#: Descriptors of the copies this process has mapped, each holding a shared lock: kept open
#: for the life of the process (closing one would drop its lock while the mapping stays).
_held: list[int] = []


def _limit(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, "") or default)
    except ValueError:
        return default


MAX_BYTES: Final = _limit("LIVEMOD_NATIVE_DISK_MAX_BYTES", 2**30)
MAX_FILES: Final = _limit("LIVEMOD_NATIVE_DISK_MAX_FILES", 256)


def hold(path: str, data: bytes) -> bool:
    """Take a shared lock on the copy at ``path`` for the life of the process, if it holds
    exactly ``data``; False if it does not (missing, different, or removed by a prune
    between the open and the lock): the caller writes it and asks again."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)  # waits only while a prune looks at this very file
        st = os.fstat(fd)
        if st.st_size != len(data) or os.stat(path).st_ino != st.st_ino:
            raise OSError("removed or replaced")
        with open(fd, "rb", closefd=False) as f:
            if f.read() != data:
                raise OSError("other bytes")
        with contextlib.suppress(OSError):
            os.utime(path)  # most recently used: the prune removes the oldest first
    except OSError:
        os.close(fd)
        return False
    with _lock:
        _held.append(fd)
    return True


def prune(root: str, max_bytes: int = MAX_BYTES, max_files: int = MAX_FILES) -> list[str]:
    """Remove the least recently used copies under ``root`` (``<cache>/native``) past the
    bounds, never one locked by any process; return the paths removed."""
    found: list[tuple[float, int, str]] = []
    try:
        for digest in os.scandir(root):
            if not digest.is_dir(follow_symlinks=False):
                continue
            for number in os.scandir(digest.path):
                if not number.is_dir(follow_symlinks=False):
                    continue
                for entry in os.scandir(number.path):
                    if entry.name.startswith(".part-") or not entry.is_file(follow_symlinks=False):
                        continue
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    found.append((st.st_mtime, st.st_size, entry.path))
    except OSError:
        return []
    total = sum(size for _, size, _ in found)
    count = len(found)
    removed: list[str] = []
    for _, size, path in sorted(found):  # oldest first
        if total <= max_bytes and count <= max_files:
            break
        if _remove_unused(path):
            removed.append(path)
            total -= size
            count -= 1
    return removed


def _remove_unused(path: str) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False  # mapped by a process: in use
        try:
            os.unlink(path)
        except OSError:
            return False
        for folder in (os.path.dirname(path), os.path.dirname(os.path.dirname(path))):
            with contextlib.suppress(OSError):
                os.rmdir(folder)  # only once empty
        return True
    finally:
        os.close(fd)
