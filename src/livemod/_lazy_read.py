"""A package's files read when first imported, for a load with signatures off.

With signatures on, a load reads every file of a package up front: the signature covers
those bytes, and the same bytes are compiled, so nothing can change between the check and
the run. With signatures off there is no check to keep in step with, and reading all of a
large package (pygments: 343 files) costs more than the warm import it is compared with, of
which only a few files are imported. So such a load stats every file (one ``os.stat``
each, for the walk's fingerprint and the size limits) and reads a file when the package
first imports it.

What is promised instead of "the bytes read up front": a file changed on disk since the load
began is never run. Its fingerprint -- device, inode, size, mtime and ctime, taken by the
walk -- is compared with the open file's before its bytes are used; any difference (a
rewrite, a rename over it, removal) refuses the import with an ImportError that names the
file and says to upgrade. A file added since is not part of the package (``_loader``'s
finder). ctime cannot be set by a user, so a rewrite changes it -- unless the rewrite lands
in the same tick of the file system's clock as the last change before the walk. That is
git's "racy clean" problem, and the answer is git's: a file whose ctime is within
``RACY_NS`` of the walk (or ahead of it) is read at once, with the others read ahead.

Under ``warn`` and ``enforce`` nothing here is used.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import final

__all__ = ["LazyFiles", "RelativeView", "fingerprint"]

#: Files whose last change is this close to the walk (or after it: a clock ahead) are read
#: at once. File system clocks tick coarsely (a jiffy on Linux; 1-2 s on ext3 and FAT).
RACY_NS: int = 2 * 10**9

Fingerprint = tuple[int, int, int, int, int]  # (st_dev, st_ino, st_size, mtime_ns, ctime_ns)


def fingerprint(st: os.stat_result) -> Fingerprint:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


@final
class LazyFiles(Mapping[str, bytes]):
    """Absolute path -> bytes of a package's files; a file is read on first access, and
    refused if it changed since the walk.

    Lock protects: ``_data`` (a submodule may be imported from several threads at once).
    """

    __slots__ = ("_data", "_lock", "_max", "_stats", "module")

    def __init__(self, module: str, stats: dict[str, Fingerprint], started_ns: int,
                 max_file: int, eager: Iterable[str] = ()) -> None:
        self.module = module
        self._stats = stats
        self._max = max_file
        self._data: dict[str, bytes] = {}
        self._lock = threading.Lock()
        for path, stamp in stats.items():
            if stamp[4] >= started_ns - RACY_NS:
                self._data[path] = self._read(path)
        for path in eager:
            if path not in self._data:
                self._data[path] = self._read(path)

    def __getitem__(self, path: str) -> bytes:
        data = self._data.get(path)
        if data is not None:
            return data
        if path not in self._stats:
            raise KeyError(path)
        data = self._read(path)
        with self._lock:
            return self._data.setdefault(path, data)

    def __contains__(self, path: object) -> bool:
        return path in self._stats

    def __iter__(self) -> Iterator[str]:
        return iter(self._stats)

    def __len__(self) -> int:
        return len(self._stats)

    def size(self, path: str) -> int:
        """A file's size as the walk saw it (no read)."""
        return self._stats[path][2]

    def read_paths(self) -> list[str]:
        """The files read so far (the others were never opened)."""
        with self._lock:
            return list(self._data)

    def _read(self, path: str) -> bytes:
        stamp = self._stats[path]
        try:
            with open(path, "rb") as f:
                now = fingerprint(os.fstat(f.fileno()))
                data = f.read(self._max + 1) if now == stamp else b""
        except OSError as exc:
            raise ImportError(
                f"{path}: cannot be read ({exc.strerror}); it was part of module "
                f"{self.module!r} when it was loaded (restore it, or upgrade the module)",
                name=self.module, path=path,
            ) from None
        if now != stamp or len(data) != stamp[2]:
            raise ImportError(
                f"{path}: changed on disk since module {self.module!r} was loaded, and "
                f"its code is never mixed with a newer version's (upgrade the module: "
                f"livemod upgrade {self.module}; or load with signatures on, which reads "
                f"every file up front)", name=self.module, path=path,
            )
        return data


@final
class RelativeView(Mapping[str, bytes]):
    """The same files by path relative to the module's root (what a signature names)."""

    __slots__ = ("_cut", "_files", "_root")

    def __init__(self, files: LazyFiles, root: str) -> None:
        self._files = files
        self._root = os.path.join(root, "")
        self._cut = len(self._root)

    def __getitem__(self, rel: str) -> bytes:
        return self._files[self._root + rel.replace("/", os.sep)]

    def __iter__(self) -> Iterator[str]:
        return (p[self._cut:].replace(os.sep, "/") for p in self._files)

    def __len__(self) -> int:
        return len(self._files)
