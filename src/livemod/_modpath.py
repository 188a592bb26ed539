"""Finding modules by name or alias on the modpath (the part of modprobe that searches).

Manifests are cached by (path, mtime, size) so repeated lookups do not re-parse unchanged
files. A file named after the wanted module is tried first; otherwise every module on the
modpath is read for a matching name or alias. A broken file that is not the one asked for is
skipped (``depmod`` reports those); the one asked for by file name raises its error.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence
from typing import final

from ._manifest import ModuleInfo, locate, read_manifest
from .errors import LivemodError, ManifestError

__all__ = ["ModPath"]


@final
class ModPath:
    """A search over folders; lock protects ``_cache``."""

    __slots__ = ("_cache", "_lock", "folders")

    def __init__(self, folders: Sequence[str]) -> None:
        self.folders = folders
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[tuple[float, int], ModuleInfo]] = {}

    def find(self, name: str) -> ModuleInfo | None:
        """The module whose name or alias is ``name``, or None.

        Raises:
            ManifestError: the file named after ``name`` is broken, or declares another
                name and nothing else on the modpath is ``name``.
        """
        mismatch: ManifestError | None = None
        for candidate in self._named(name):
            info = self._read(candidate)
            if info.name == name or name in info.aliases:
                return info
            mismatch = ManifestError(
                f"{candidate}: declares the name {info.name!r}, not {name!r} "
                f"(rename the file or fix the manifest's name)",
                module=name, path=candidate, field="name",
            )
        for candidate in self.candidates():
            try:
                info = self._read(candidate)
            except LivemodError:
                continue
            if info.name == name or name in info.aliases:
                return info
        if mismatch is not None:
            raise mismatch
        return None

    def candidates(self) -> Iterator[str]:
        """Every module file and package folder on the modpath, in search order."""
        for folder in self.folders:
            try:
                entries = sorted(os.scandir(folder), key=lambda e: e.name)
            except OSError:
                continue
            for entry in entries:
                if entry.name.startswith((".", "_")):
                    continue
                single = entry.is_file() and entry.name.endswith(".py")
                if single or os.path.isfile(os.path.join(entry.path, "__init__.py")):
                    yield entry.path

    def _named(self, name: str) -> Iterator[str]:
        for folder in self.folders:
            for path in (os.path.join(folder, name + ".py"), os.path.join(folder, name)):
                if os.path.isfile(path) or os.path.isfile(os.path.join(path, "__init__.py")):
                    yield path

    def _read(self, path: str) -> ModuleInfo:
        _, source_file, _ = locate(path)
        st = os.stat(source_file)
        key = (st.st_mtime, st.st_size)
        with self._lock:
            hit = self._cache.get(path)
        if hit is not None and hit[0] == key:
            return hit[1]
        info = read_manifest(path)
        with self._lock:
            self._cache[path] = (key, info)
        return info
