"""Finding modules by name or alias on the modpath (the part of modprobe that searches).

The search goes through a depmod index (see ``_depmod``), made on first use from each
folder's saved ``.livemod-depmod.json`` where one is usable and by reading the folder
otherwise; every answer is checked against the files first, so an index never hides an
edit. Search order: the modpath folders in order (names sorted within a folder), then the
modules of installed distributions' ``livemod.modules`` entry points. A file named after the
wanted module is tried first; then the first module whose name or alias matches. A broken
module that is not the one asked for is skipped (``depmod`` lists those); the one asked for
by file name raises its error.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections.abc import Iterator, Sequence
from typing import final

from ._depmod import DepmodReport, Index, open_index
from ._depmod_entry import Precheck, read_entry
from ._manifest import read_manifest
from ._metadata import ModuleInfo
from ._names import canonical
from .errors import SignatureError

__all__ = ["DepmodReport", "ModPath"]


@final
class ModPath:
    """A search over folders (and entry points), through an index kept up to date.

    Thread-safe: the lock protects ``_index`` (made on first use) and everything in it.
    ``precheck`` (under enforce): each module's signature is checked before its manifest
    is parsed, and one that fails is broken with that ``SignatureError``.
    """

    __slots__ = ("_entry_points", "_index", "_lock", "_precheck", "folders")

    def __init__(self, folders: Sequence[str], *, entry_points: bool = True,
                 precheck: Precheck | None = None) -> None:
        self.folders = folders
        self._entry_points = entry_points
        self._precheck = precheck
        self._lock = threading.Lock()
        self._index: Index | None = None

    def find(self, name: str) -> ModuleInfo | None:
        """The module whose name or alias is ``name``, or None.

        Raises:
            ManifestError: the file named after ``name`` is broken, or declares another
                name and nothing else on the modpath is ``name``.
            SignatureError: under enforce, the file named after ``name`` is not signed.
        """
        with self._lock:
            return self._index_unlocked().find(canonical(name))

    def manifest(self, path: str) -> ModuleInfo:
        """The manifest of the module at ``path`` (``modinfo FILE``); under enforce its
        signature is checked first, as for a load: a file no trusted key signed is refused
        with ``SignatureError`` naming it, and never parsed.

        Raises:
            ModuleNotFound, ManifestError, SignatureError.
        """
        if self._precheck is None:
            return read_manifest(path)
        entry = read_entry("", "", path, None, precheck=self._precheck)
        if entry.error is not None and entry.error[0] == "SignatureError":
            stem = os.path.basename(entry.path.rstrip(os.sep)).removesuffix(".py")
            raise SignatureError(entry.error[1], module=stem)
        # Signed: a broken one is read again for its own error (file, line, field).
        return entry.info if entry.info is not None else read_manifest(path)

    def patterns(self) -> list[tuple[str, ModuleInfo]]:
        """``(alias pattern, module)`` of the modpath's modules, in search order."""
        with self._lock:
            return self._index_unlocked().patterns()

    def candidates(self) -> Iterator[str]:
        """Every module file and package folder on the modpath, in search order."""
        with self._lock:
            return iter(self._index_unlocked().candidates())

    def depmod(self, *, full: bool = False, write: bool = True) -> DepmodReport:
        """Bring the index up to date and save each folder's part of it in that folder.

        Args:
            full: read every module again, not only those whose files changed.
            write: save ``.livemod-depmod.json`` in each folder (a folder that cannot be
                written is listed in ``unwritable`` and keeps its index in memory).

        Returns:
            The modules, the broken ones with their errors, what was written, and the time.
        """
        started = time.perf_counter()
        with self._lock:
            if self._index is None:
                # One pass over the files: a saved index only spares parsing what is unchanged.
                self._index = open_index(self.folders, entry_points=self._entry_points,
                                         verify=True, full=full, precheck=self._precheck)
                report = self._index.depmod(write=write, refresh=False)
            else:
                report = self._index.depmod(full=full, write=write)
        return dataclasses.replace(report, seconds=time.perf_counter() - started)

    def _index_unlocked(self) -> Index:
        if self._index is None:
            self._index = open_index(self.folders, entry_points=self._entry_points,
                                     precheck=self._precheck)
        return self._index
