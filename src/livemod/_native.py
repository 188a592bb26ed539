"""Extension modules (``.so``) of a package module: each version from its own copy.

CPython loads an extension under a private name with ``ExtensionFileLoader`` (multi-phase
and single-phase init alike), but a second load of the *same file* shares or resets native
state, and nothing raises: multi-phase modules share their native types process-wide, a
single-phase module re-runs its init and resets the C statics under the live version, old
PyO3 hands back the first version's module object. The dynamic loader keeps one mapping
per (device, inode), so a hard link is no way out either. So every load of a module maps
its extensions from a *copy* of the bytes that were read (and signature-checked) at load:
a new inode per version.

The copies are kept in livemod's cache folder by content hash, one numbered copy per load of
that content in a process (``native/<sha256>/<n>/<file>``); another process reuses the
files, this one never maps one twice. A process holds a lock on every copy it maps, and the
folder is pruned of the oldest copies no process holds (``_native_disk``). A library, once
mapped, stays mapped for the life of the process (CPython never unloads one), so the number
and the bytes of copies a process maps are capped; past the cap a load or an upgrade is
refused before anything changes.

The module's Python side unloads and upgrades as any other; what only native code still
holds is reported by the leak check as held outside the garbage collector.
"""

from __future__ import annotations

import errno
import hashlib
import importlib.machinery
import importlib.util
import os
import tempfile
import threading
from collections.abc import Mapping
from typing import Final, final

from . import _native_disk
from ._cache_root import root
from .errors import NativeCacheFull

__all__ = ["CACHE", "NativeCache", "extension_files", "find", "spec"]

#: Suffixes of extension modules on this interpreter, longest first.
SUFFIXES: Final = tuple(sorted(importlib.machinery.EXTENSION_SUFFIXES, key=len, reverse=True))


def _limit(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    try:
        return int(raw) if raw else default
    except ValueError:
        return default


def extension_files(paths: Mapping[str, bytes] | list[str]) -> list[str]:
    """The extension modules among a module's files (absolute or relative paths)."""
    return [p for p in paths if p.endswith(SUFFIXES)]


def find(files: Mapping[str, bytes], folder: str, leaf: str) -> str | None:
    """The extension file for submodule ``leaf`` in ``folder`` among the files read at load."""
    for suffix in SUFFIXES:
        candidate = os.path.join(folder, leaf + suffix)
        if candidate in files:
            return candidate
    return None


@final
class NativeCache:
    """The copies this process has mapped, and the caps on them.

    Lock protects: 1) ``copies`` and ``bytes`` (what is mapped, never decremented: a mapped
    library stays); 2) ``_next`` (the next copy number per content hash).
    """

    __slots__ = ("_lock", "_next", "bytes", "copies", "max_bytes", "max_copies")

    def __init__(self, max_copies: int = 64, max_bytes: int = 512 * 2**20) -> None:
        self._lock = threading.Lock()
        self._next: dict[str, int] = {}
        self.copies = 0
        self.bytes = 0
        self.max_copies = max_copies
        self.max_bytes = max_bytes

    def check_room(self, module: str, sizes: list[int]) -> None:
        """Refuse (before anything changes) a load whose extensions would pass the caps.

        Raises:
            NativeCacheFull: naming the module, what is mapped, and what to do.
        """
        if not sizes:
            return
        with self._lock:
            copies, size = self.copies + len(sizes), self.bytes + sum(sizes)
            if copies > self.max_copies or size > self.max_bytes:
                raise NativeCacheFull(
                    f"cannot load {module!r}: its {len(sizes)} extension module(s) would "
                    f"make {copies} native copies ({size / 2**20:.1f} MiB) mapped in this "
                    f"process, past the cap of {self.max_copies} copies / "
                    f"{self.max_bytes / 2**20:.0f} MiB (each load of a module with native "
                    f"code maps a copy that stays for the life of the process: restart it, "
                    f"or raise LIVEMOD_NATIVE_MAX_COPIES / LIVEMOD_NATIVE_MAX_BYTES)",
                    module=module,
                )

    def copy(self, fullname: str, source: str, data: bytes) -> str:
        """A file holding ``data`` that this process has never mapped; counted as mapped.

        Raises:
            ImportError: past the caps (an import after the load's check), or the cache
                folder cannot be written.
        """
        digest = hashlib.sha256(data).hexdigest()
        wrote = False
        with self._lock:
            if self.copies + 1 > self.max_copies or self.bytes + len(data) > self.max_bytes:
                raise ImportError(
                    f"cannot load native extension {fullname!r}: the native copy cache is "
                    f"full ({self.copies} copies, {self.bytes / 2**20:.1f} MiB mapped; see "
                    f"LIVEMOD_NATIVE_MAX_COPIES)", name=fullname, path=source,
                )
            number = self._next.get(digest, 0)
            self._next[digest] = number + 1
            self.copies += 1
            self.bytes += len(data)
        folder = os.path.join(root(), "native", digest, str(number))
        target = os.path.join(folder, os.path.basename(source))
        try:
            for _attempt in range(3):
                # Held (a shared lock for the life of the process) before it is mapped, so
                # that no prune removes it: _native_disk.
                if _native_disk.hold(target, data):
                    return target
                os.makedirs(folder, mode=0o700, exist_ok=True)
                fd, scratch = tempfile.mkstemp(dir=folder, prefix=".part-")
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                os.chmod(scratch, 0o500)
                os.replace(scratch, target)  # atomic: another process may read it now
                wrote = True
            raise OSError(errno.EAGAIN, "removed again and again while being taken")
        except OSError as exc:
            raise ImportError(
                f"cannot load native extension {fullname!r}: cannot write its copy in "
                f"{folder}: {exc.strerror} (set LIVEMOD_CACHE_DIR to a writable folder)",
                name=fullname, path=source,
            ) from None
        finally:
            if wrote:  # a new copy on disk: keep the folder within its bounds
                _native_disk.prune(os.path.join(root(), "native"))


#: The process's copies (one per process: mapped libraries are process-wide).
CACHE: Final = NativeCache(
    max_copies=_limit("LIVEMOD_NATIVE_MAX_COPIES", 64),
    max_bytes=_limit("LIVEMOD_NATIVE_MAX_BYTES", 512 * 2**20),
)


def check_room(module: str, by_path: Mapping[str, bytes]) -> None:
    """``CACHE.check_room`` for the extension files of a module as read at load."""
    CACHE.check_room(module, [len(by_path[p]) for p in extension_files(list(by_path))])


def spec(fullname: str, source: str, data: bytes) -> importlib.machinery.ModuleSpec:
    """The spec that loads extension ``fullname`` from a fresh copy of ``data``."""
    path = CACHE.copy(fullname, source, data)
    loader = importlib.machinery.ExtensionFileLoader(fullname, path)
    found = importlib.util.spec_from_file_location(fullname, path, loader=loader)
    assert found is not None
    return found


def spec_for(
    fullname: str, source: str, data: bytes, parent: dict[str, object]
) -> importlib.machinery.ModuleSpec:
    """``spec``, noting the extension on the module it belongs to (lsmod shows it)."""
    from ._provenance import owner_of_namespace

    found = spec(fullname, source, data)
    inst = owner_of_namespace(parent)
    if inst is not None:
        inst.own_list("native").append(inst.name + fullname[len(inst.private_name):])
    return found
