"""Reading a module once: every file into memory, the manifest, the code, the signature.

Everything a load needs comes from one read of the module's files: the manifest is parsed
from the bytes the code is compiled from, a package's submodules are later compiled from
the same snapshot, and the signature check hashes those very bytes. Nothing can change
between checking and running.

Bounds keep a hostile or mistaken module from exhausting the host: a file, a module and a
package's file count each have a limit. A package's files are found by ``_locate``'s walker,
the one depmod uses too (symbolic links to folders are not followed).
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import CodeType, MappingProxyType
from typing import Final, final

from . import _bytecode, _lazy_read, _native
from ._locate import locate, package_files
from ._manifest import from_record, parse_manifest, parse_module, record_of
from ._metadata import ModuleInfo
from .errors import ManifestError

__all__ = ["ModuleSource", "read_module"]

#: Largest single file of a module (bytes).
MAX_FILE: Final = 16 * 1024 * 1024
#: Largest module in total (bytes), every file of a package counted.
MAX_MODULE: Final = 64 * 1024 * 1024


@final
@dataclass(frozen=True, slots=True)
class ModuleSource:
    """What one read of a module gives: its metadata, its code, and all its bytes."""

    info: ModuleInfo
    code: CodeType
    files: Mapping[str, bytes]  # relative path (with /) -> bytes: what a signature covers
    by_path: Mapping[str, bytes]  # absolute path -> bytes: what the loader compiles
    signature: bytes | None


def read_module(
    path: str | os.PathLike[str],
    *,
    signature: bool = True,
    precheck: Callable[[str, Mapping[str, bytes], bytes | None], None] | None = None,
    lazy: bool = False,
) -> ModuleSource:
    """Locate a module and read it once (and its ``.sig`` too, if ``signature``).

    ``precheck(path, files, sig)`` runs on the bytes before the manifest is parsed (the
    signature check: nothing whose cost the file controls runs before it). ``lazy`` (only
    without signatures): a package's files other than ``__init__.py`` are read when first
    imported, and refused if they changed since (``_lazy_read``).

    Raises:
        ModuleNotFound: nothing at ``path``.
        ManifestError: not a module, too large, unreadable, a broken manifest, or code that
            does not compile (file and line named).
    """
    abs_path, source_file, is_package = locate(path)
    root = abs_path if is_package else os.path.dirname(source_file)
    names = _package_files(abs_path) if is_package else [source_file]
    if lazy and is_package and not signature:
        return _read_lazily(abs_path, source_file, names, root, precheck)
    by_path: dict[str, bytes] = {}
    total = 0
    for name in names:
        data = _read(name, source_file)
        total += len(data)
        if total > MAX_MODULE:
            raise ManifestError(
                f"{abs_path}: the module is larger than {MAX_MODULE // 2**20} MiB in all "
                f"(keep data files out of the module's folder)", path=abs_path,
            )
        by_path[name] = data
    # Every path was found under root by the walk: slicing is relpath without its cost
    # (a package has hundreds of files, and this runs on every load).
    cut = len(os.path.join(root, ""))
    files = {p[cut:].replace(os.sep, "/"): b for p, b in by_path.items()}
    sig = _read_signature(abs_path) if signature else None
    if precheck is not None:
        precheck(abs_path, files, sig)
    return _finish(abs_path, source_file, is_package, by_path, files, sig)


def _read_lazily(
    abs_path: str, source_file: str, names: list[str], root: str,
    precheck: Callable[[str, Mapping[str, bytes], bytes | None], None] | None,
) -> ModuleSource:
    """``read_module`` of a package without signatures: stat every file, read the
    ``__init__.py`` (and any file changed in the last moments: ``_lazy_read``) now."""
    started = time.time_ns()
    stats: dict[str, _lazy_read.Fingerprint] = {}
    total = 0
    for name in names:
        try:
            st = os.stat(name)
        except OSError as exc:
            loop = " (a symbolic link loop)" if exc.errno == errno.ELOOP else ""
            raise ManifestError(f"{name}: cannot be read: {exc.strerror}{loop} (fix or "
                                f"remove it)", path=name) from None
        _check_size(name, st.st_size)
        total += st.st_size
        if total > MAX_MODULE:
            raise ManifestError(
                f"{abs_path}: the module is larger than {MAX_MODULE // 2**20} MiB in all "
                f"(keep data files out of the module's folder)", path=abs_path,
            )
        stats[name] = _lazy_read.fingerprint(st)
    stem = os.path.basename(abs_path.rstrip(os.sep))
    try:
        by_path = _lazy_read.LazyFiles(stem, stats, started, MAX_FILE, eager=[source_file])
    except ImportError as exc:  # changed between the stat and the read
        raise ManifestError(f"{exc.path}: changed or vanished while the module was being "
                            f"read (load it again)", path=exc.path) from None
    files = _lazy_read.RelativeView(by_path, root)
    if precheck is not None:
        precheck(abs_path, files, None)
    return _finish(abs_path, source_file, True, by_path, files, None)


def _finish(
    abs_path: str, source_file: str, is_package: bool, by_path: Mapping[str, bytes],
    files: Mapping[str, bytes], sig: bytes | None,
) -> ModuleSource:
    """The manifest and the code from the bytes read.

    Both are kept in one bytecode cache entry keyed by those bytes: a warm load reads that
    entry and neither parses nor compiles. (The signature was checked on the bytes before
    this; the entry is livemod's own file, not the module's.)
    """
    source = by_path[source_file]
    entry = _bytecode.lookup(source, source_file)
    info = None
    if entry.code is not None:
        info = from_record(entry.extra, path=abs_path, source_file=source_file,
                           is_package=is_package)
    fresh = info is None
    if info is None:
        info = parse_manifest(source, path=abs_path, source_file=source_file,
                              is_package=is_package)
    if type(by_path) is _lazy_read.LazyFiles:
        by_path.module = info.name
    _native.check_room(info.name, by_path)  # NativeCacheFull, before anything changes
    code = entry.code
    if code is None:
        code = _compile(source, abs_path, source_file, is_package, info.name)
    if fresh:
        entry.store(code, record_of(info))
    return ModuleSource(info, code, _frozen(files), _frozen(by_path), sig)


def _compile(source: bytes, abs_path: str, source_file: str, is_package: bool,
             name: str) -> CodeType:
    try:
        return compile(source, source_file, "exec", dont_inherit=True)
    except (SyntaxError, ValueError) as exc:
        # The manifest came from the module's head; a full parse words the error with
        # file and line, as for any other manifest problem.
        parse_module(source, path=abs_path, source_file=source_file, is_package=is_package)
        # Parsed but not compiled: 'return', 'yield' or 'nonlocal' outside a function.
        line = getattr(exc, "lineno", None)
        where = f"{source_file}:{line}" if line else source_file
        raise ManifestError(
            f"{where}: cannot be compiled: {getattr(exc, 'msg', exc)} (fix the code)",
            path=source_file, line=line, module=name,
        ) from exc


def _frozen(files: Mapping[str, bytes]) -> Mapping[str, bytes]:
    # A read-only view of a dict; the lazy mappings are read-only already.
    return MappingProxyType(files) if type(files) is dict else files


def _check_size(name: str, size: int) -> None:
    if size > MAX_FILE:
        raise ManifestError(
            f"{name}: {size // 2**20} MiB is larger than a module file may be "
            f"({MAX_FILE // 2**20} MiB; keep large data out of module files)", path=name,
        )


def _read(name: str, source_file: str) -> bytes:
    # One open, fstat and read of exactly the file's size (plus one byte, which shows a file
    # that grew). A read of MAX_FILE + 1 bytes would allocate 16 MiB for every file: most
    # of a trivial load's reading time.
    try:
        fd = os.open(name, os.O_RDONLY | _CLOEXEC)
        try:
            size = os.fstat(fd).st_size
            _check_size(name, size)
            data = os.read(fd, size + 1)
            if len(data) != size:  # grew since the fstat, not a regular file, a short read
                data = _read_rest(fd, data)
        finally:
            os.close(fd)
    except OSError as exc:
        loop = " (a symbolic link loop)" if exc.errno == errno.ELOOP else ""
        raise ManifestError(f"{name}: cannot be read: {exc.strerror}{loop} (fix or remove "
                            f"it)", path=name) from None
    if len(data) > MAX_FILE:  # grew since the stat
        raise ManifestError(f"{name}: larger than {MAX_FILE // 2**20} MiB", path=name)
    return data


_CLOEXEC: Final = getattr(os, "O_CLOEXEC", 0)


def _read_rest(fd: int, data: bytes) -> bytes:
    """The rest of a file (to its end, or one byte past ``MAX_FILE``), in bounded chunks."""
    chunks = [data]
    total = len(data)
    while total <= MAX_FILE:
        chunk = os.read(fd, min(1 << 20, MAX_FILE + 1 - total))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)


def _package_files(folder: str) -> list[str]:
    try:
        files, _ = package_files(folder)
    except OSError as exc:
        raise ManifestError(f"{folder}: cannot be listed: {exc.strerror} (check "
                            f"permissions)", path=folder) from None
    return [abs_path for abs_path, _ in files]


def _read_signature(module_path: str) -> bytes | None:
    from ._signing import signature_path

    try:
        with open(signature_path(module_path), "rb") as f:
            return f.read(1024 * 1024)
    except FileNotFoundError:
        return None
    except OSError:
        return b""  # present but unreadable: the verifier says it does not verify
