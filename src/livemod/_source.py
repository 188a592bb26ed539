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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import CodeType, MappingProxyType
from typing import Final, final

from . import _native
from ._bytecode import compile_cached
from ._locate import locate, package_files
from ._manifest import parse_manifest, parse_module
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
) -> ModuleSource:
    """Locate a module and read it once (and its ``.sig`` too, if ``signature``).

    ``precheck(path, files, sig)`` runs on the bytes before the manifest is parsed (the
    signature check: nothing whose cost the file controls runs before it).

    Raises:
        ModuleNotFound: nothing at ``path``.
        ManifestError: not a module, too large, unreadable, a broken manifest, or code that
            does not compile (file and line named).
    """
    abs_path, source_file, is_package = locate(path)
    root = abs_path if is_package else os.path.dirname(source_file)
    names = _package_files(abs_path) if is_package else [source_file]
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
    source = by_path[source_file]
    # Every path was found under root by the walk: slicing is relpath without its cost
    # (a package has hundreds of files, and this runs on every load).
    cut = len(os.path.join(root, ""))
    files = {p[cut:].replace(os.sep, "/"): b for p, b in by_path.items()}
    sig = _read_signature(abs_path) if signature else None
    if precheck is not None:
        precheck(abs_path, files, sig)
    info = parse_manifest(source, path=abs_path, source_file=source_file, is_package=is_package)
    _native.check_room(info.name, by_path)  # NativeCacheFull, before anything changes
    try:
        code = compile_cached(source, source_file)
    except (SyntaxError, ValueError) as exc:
        # The manifest came from the module's head; a full parse words the error with
        # file and line, as for any other manifest problem.
        parse_module(source, path=abs_path, source_file=source_file, is_package=is_package)
        # Parsed but not compiled: 'return', 'yield' or 'nonlocal' outside a function.
        line = getattr(exc, "lineno", None)
        where = f"{source_file}:{line}" if line else source_file
        raise ManifestError(
            f"{where}: cannot be compiled: {getattr(exc, 'msg', exc)} (fix the code)",
            path=source_file, line=line, module=info.name,
        ) from exc
    return ModuleSource(info, code, MappingProxyType(files), MappingProxyType(by_path), sig)


def _read(name: str, source_file: str) -> bytes:
    try:
        size = os.stat(name).st_size
        if size > MAX_FILE:
            raise ManifestError(
                f"{name}: {size // 2**20} MiB is larger than a module file may be "
                f"({MAX_FILE // 2**20} MiB; keep large data out of module files)", path=name,
            )
        with open(name, "rb") as f:
            data = f.read(MAX_FILE + 1)
    except OSError as exc:
        loop = " (a symbolic link loop)" if exc.errno == errno.ELOOP else ""
        raise ManifestError(f"{name}: cannot be read: {exc.strerror}{loop} (fix or remove "
                            f"it)", path=name) from None
    if len(data) > MAX_FILE:  # grew since the stat
        raise ManifestError(f"{name}: larger than {MAX_FILE // 2**20} MiB", path=name)
    return data


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
