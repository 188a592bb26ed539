"""One entry of the depmod index: its records, how a module is read into one and checked
by stat, and the JSON form an entry is saved in (see ``_depmod`` for the design).

Under an ``enforce`` policy an index is made with a *precheck* (the verifier's): every
module's files are checked against its signature before its manifest is parsed, as a load
does, and one that fails is an entry whose error is that ``SignatureError``. Each entry
says whether it was read so (``enforced``), and a host reads again an entry made under the
other policy; the ``.sig`` file's stamp is kept too, so signing a module (or removing its
signature) is seen by stat like any other edit.

The JSON form is versioned (``FORMAT``/``FORMAT_VERSION``); reading it back is strict, since
a saved index is a file in a folder that other people may write: anything unexpected
raises ``ValueError``/``TypeError``/``KeyError`` and the caller drops the whole file.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final, final

from ._locate import locate, package_files
from ._manifest import parse_manifest
from ._metadata import MISSING, ModuleInfo, ParamSpec
from ._source import MAX_FILE
from ._version import Requirement
from .errors import LivemodError, ManifestError

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "DepmodReport",
    "Entry",
    "FileStamp",
    "Precheck",
    "entry_from_json",
    "entry_to_json",
    "fits",
    "racy",
    "read_entry",
    "reread",
    "unchanged",
]

FORMAT: Final = "livemod-depmod"
FORMAT_VERSION: Final = 1
#: The verifier's check of a module's files (relative path -> bytes) and signature bytes
#: before its manifest is read: raises ``SignatureError`` (see ``_signing.Verifier``).
Precheck = Callable[[str, Mapping[str, bytes], "bytes | None"], None]
#: Largest ``.sig`` file read (bytes), as for a load.
_MAX_SIG: Final = 1024 * 1024

# A kernel tick is at most 10 ms; whole-second mtimes (FAT keeps 2 s) need a wider window.
_RACY_NS: Final = 100_000_000
_RACY_COARSE_NS: Final = 2_000_000_000


@final
@dataclass(frozen=True, slots=True)
class FileStamp:
    """One file of a module as depmod read it; ``path`` is relative to the module's path."""

    path: str
    size: int
    mtime_ns: int
    sha256: str


@final
@dataclass(frozen=True, slots=True)
class Entry:
    """One module of the index, broken or not.

    ``info`` is None exactly when ``error`` (class name, message) is set. ``folder`` is the
    modpath folder and ``slot`` the name in it (``greet.py``, ``webpkg``); for an entry point
    ``folder`` is "" and ``slot`` is ``dist:name``, described by ``entry_point``.
    ``dirs`` are a package's folders with their mtimes (a file added or removed there);
    ``checked_ns`` is when the files were read, to tell racy stamps. ``sig`` is the
    signature file's (size, mtime_ns), None if there was none; ``enforced``: read with a
    signature precheck (see the module docstring).
    """

    folder: str
    slot: str
    path: str
    source_file: str
    is_package: bool
    files: tuple[FileStamp, ...]
    dirs: tuple[tuple[str, int], ...]
    checked_ns: int
    info: ModuleInfo | None
    error: tuple[str, str] | None = None
    entry_point: str = ""
    sig: tuple[int, int] | None = None
    enforced: bool = False


@final
@dataclass(frozen=True, slots=True)
class DepmodReport:
    """What ``depmod`` found and wrote.

    ``broken`` pairs a path with ``"ErrorClass: message"``; ``entry_points`` counts the entry
    points of group ``livemod.modules`` (broken ones too); ``written`` are the index files
    saved, and ``unwritable`` the folders whose index is kept in memory only, with why.
    """

    modules: tuple[ModuleInfo, ...]
    broken: tuple[tuple[str, str], ...]
    entry_points: int
    written: tuple[str, ...]
    unwritable: tuple[tuple[str, str], ...]
    seconds: float


# -- reading and checking --------------------------------------------------------------------


def racy(mtime_ns: int, checked_ns: int) -> bool:
    """True if a file stamped ``mtime_ns`` may have changed again unseen after ``checked_ns``."""
    window = _RACY_COARSE_NS if mtime_ns % 1_000_000_000 == 0 else _RACY_NS
    return mtime_ns + window >= checked_ns


# -- reading one module ----------------------------------------------------------------------


def _stamp_file(file: str, rel: str) -> tuple[FileStamp, bytes]:
    with open(file, "rb") as fh:
        # fstat before reading: a change after it shows up as a new stamp at the next check.
        st = os.fstat(fh.fileno())
        # The load's size limit, applied before reading: an index scan must not read a
        # stray multi-gigabyte file on the module path into memory to hash it.
        if st.st_size > MAX_FILE:
            raise ManifestError(
                f"{file}: {st.st_size // 2**20} MiB is larger than a module file may be "
                f"({MAX_FILE // 2**20} MiB; keep large data out of module files)", path=file)
        data = fh.read(st.st_size + 1)
        if len(data) > st.st_size:  # grew since the fstat (or a size the stat does not know)
            data += fh.read(MAX_FILE + 1 - len(data))
        if len(data) > MAX_FILE:
            raise ManifestError(f"{file}: larger than {MAX_FILE // 2**20} MiB", path=file)
    return FileStamp(rel, st.st_size, st.st_mtime_ns, hashlib.sha256(data).hexdigest()), data


def _stamp_package(path: str) -> tuple[tuple[FileStamp, ...], tuple[tuple[str, int], ...],
                                        dict[str, bytes]]:
    # The same walk as a load's (``_locate.package_files``): the index describes exactly the
    # files a load reads and a signature covers.
    found, dirs = package_files(path)
    files: list[FileStamp] = []
    contents: dict[str, bytes] = {}
    for file, rel in found:
        stamp, data = _stamp_file(file, rel)
        files.append(stamp)
        contents[rel.replace(os.sep, "/")] = data
    files.sort(key=lambda stamp: stamp.path)
    dirs.sort()
    return tuple(files), tuple(dirs), contents


def _sig_stamp(path: str) -> tuple[int, int] | None:
    from ._signing import signature_path

    try:
        st = os.stat(signature_path(path))
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def _read_sig(path: str) -> bytes | None:
    from ._signing import signature_path

    try:
        with open(signature_path(path), "rb") as fh:
            return fh.read(_MAX_SIG)
    except FileNotFoundError:
        return None
    except OSError:
        return b""  # present but unreadable: the verifier says it does not verify


def read_entry(folder: str, slot: str, path: str, old: Entry | None,
               entry_point: str = "", precheck: Precheck | None = None) -> Entry:
    """Read one module into an entry (its error, if it is broken); ``old`` is the entry it
    replaces, whose manifest is kept if the bytes are the same. With ``precheck``, the
    signature is checked before the manifest is parsed."""
    checked = time.time_ns()
    files: tuple[FileStamp, ...] = ()
    dirs: tuple[tuple[str, int], ...] = ()
    source_file, is_package = path, False
    sig: tuple[int, int] | None = None
    enforced = precheck is not None
    try:
        path, source_file, is_package = locate(path)
        sig = _sig_stamp(path)  # before the files: a signature written meanwhile is seen
        if is_package:
            files, dirs, contents = _stamp_package(path)
            source = contents.get("__init__.py", b"")
        else:
            stamp, source = _stamp_file(source_file, os.path.basename(source_file))
            files, contents = (stamp,), {stamp.path: source}
        if precheck is not None:
            precheck(path, contents, _read_sig(path))  # SignatureError: nothing parsed
        del contents
        if old is not None and old.path == path and old.files and [
                (f.path, f.sha256) for f in old.files] == [(f.path, f.sha256) for f in files] \
                and not _refused(old):
            # Same bytes, same manifest (or the same error): skip the parse.
            return Entry(folder, slot, path, source_file, is_package, files, dirs, checked,
                         old.info, old.error, entry_point, sig, enforced)
        info = parse_manifest(source, path=path, source_file=source_file,
                              is_package=is_package)
    except (LivemodError, OSError) as exc:
        return Entry(folder, slot, path, source_file, is_package, files, dirs, checked, None,
                     (type(exc).__name__, str(exc)), entry_point, sig, enforced)
    return Entry(folder, slot, path, source_file, is_package, files, dirs, checked, info,
                 None, entry_point, sig, enforced)


def _refused(entry: Entry) -> bool:
    """The entry is a signature refusal: it says nothing of the manifest."""
    return entry.error is not None and entry.error[0] == "SignatureError"


def fits(entry: Entry, precheck: Precheck | None) -> bool:
    """``entry`` may be used as it is: its stamps hold (``unchanged``) and it was read under
    the policy asked for (with a precheck or without)."""
    return entry.enforced == (precheck is not None) and unchanged(entry)


def unchanged(entry: Entry) -> bool:
    """True if every stamp of ``entry`` still holds and none is racy (stats only)."""
    if not entry.files:
        return False
    try:
        for stamp in entry.files:
            file = os.path.join(entry.path, stamp.path) if entry.is_package else entry.path
            st = os.stat(file)
            if (st.st_size, st.st_mtime_ns) != (stamp.size, stamp.mtime_ns) \
                    or racy(stamp.mtime_ns, entry.checked_ns):
                return False
        for rel_dir, mtime_ns in entry.dirs:
            st = os.stat(os.path.join(entry.path, rel_dir))
            if st.st_mtime_ns != mtime_ns or racy(mtime_ns, entry.checked_ns):
                return False
    except OSError:
        return False
    sig = _sig_stamp(entry.path)
    return sig == entry.sig and (sig is None or not racy(sig[1], entry.checked_ns))


def reread(entry: Entry, precheck: Precheck | None = None) -> Entry | None:
    """``entry`` read again from its files, or None if the module is gone."""
    if not os.path.exists(entry.path):
        return None
    return read_entry(entry.folder, entry.slot, entry.path, entry, entry.entry_point,
                      precheck)


# -- JSON ------------------------------------------------------------------------------------


def entry_to_json(entry: Entry) -> dict[str, Any]:
    """The saved form of ``entry`` (plain JSON types only)."""
    out: dict[str, Any] = {
        "slot": entry.slot, "path": entry.path, "source_file": entry.source_file,
        "is_package": entry.is_package, "checked_ns": entry.checked_ns,
        "files": [[f.path, f.size, f.mtime_ns, f.sha256] for f in entry.files],
        "dirs": [[rel, mtime] for rel, mtime in entry.dirs],
        "entry_point": entry.entry_point,
        "sig": list(entry.sig) if entry.sig is not None else None,
        "enforced": entry.enforced,
    }
    if entry.error is not None:
        out["error"] = {"class": entry.error[0], "message": entry.error[1]}
    info = entry.info
    if info is not None:
        out.update(
            name=info.name, version=info.version, description=info.description,
            license=info.license, author=info.author, aliases=list(info.aliases),
            depends=[str(req) for req in info.depends],
            params={p.name: {"type": p.type, "writable": p.writable, "doc": p.doc}
                    | ({} if p.default is MISSING else {"default": p.default})
                    for p in info.params.values()},
        )
    return out


def _typed(doc: Mapping[str, Any], key: str, kind: type[Any]) -> Any:
    value = doc[key]
    # bool is an int, but never a valid size or time.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise TypeError(f"{key!r} should be {kind.__name__}, not {type(value).__name__}")
    return value


def _strings(doc: Mapping[str, Any], key: str) -> tuple[str, ...]:
    items = _typed(doc, key, list)
    if not all(isinstance(item, str) for item in items):
        raise TypeError(f"{key!r} should be a list of str")
    return tuple(items)


def _param(name: str, doc: Mapping[str, Any]) -> ParamSpec:
    ptype = _typed(doc, "type", str)
    default: object = doc.get("default", MISSING)
    if isinstance(default, list):
        default = tuple(default)  # a list default is kept as a tuple, as the manifest does
    elif ptype == "float" and isinstance(default, int) and not isinstance(default, bool):
        default = float(default)
    return ParamSpec(name=name, type=ptype, default=default,
                     writable=_typed(doc, "writable", bool), doc=_typed(doc, "doc", str))


def entry_from_json(doc: Mapping[str, Any], folder: str) -> Entry:
    """The entry saved as ``doc`` in ``folder`` ("" for an entry point).

    Raises:
        ValueError, TypeError, KeyError: ``doc`` is not what :func:`entry_to_json` writes.
    """
    path = _typed(doc, "path", str)
    source_file = _typed(doc, "source_file", str)
    is_package = _typed(doc, "is_package", bool)
    files = tuple(FileStamp(str(rel), int(size), int(mtime), str(sha))
                  for rel, size, mtime, sha in _typed(doc, "files", list))
    dirs = tuple((str(rel), int(mtime)) for rel, mtime in _typed(doc, "dirs", list))
    # Absent from indexes saved before signatures were stamped: the entry is read again.
    sig_doc = doc.get("sig")
    sig = None if sig_doc is None else (int(sig_doc[0]), int(sig_doc[1]))
    enforced = doc.get("enforced", False)
    if not isinstance(enforced, bool):
        raise TypeError(f"'enforced' should be bool, not {type(enforced).__name__}")
    error: tuple[str, str] | None = None
    info: ModuleInfo | None = None
    if "error" in doc:
        error = (_typed(doc["error"], "class", str), _typed(doc["error"], "message", str))
    else:
        params = _typed(doc, "params", dict)
        info = ModuleInfo(
            name=_typed(doc, "name", str), version=_typed(doc, "version", str),
            description=_typed(doc, "description", str), license=_typed(doc, "license", str),
            author=_typed(doc, "author", str),
            depends=tuple(Requirement.parse(text) for text in _strings(doc, "depends")),
            aliases=_strings(doc, "aliases"),
            params=MappingProxyType({str(k): _param(str(k), v) for k, v in params.items()}),
            path=path, source_file=source_file, is_package=is_package,
        )
    return Entry(folder, _typed(doc, "slot", str), path, source_file, is_package, files, dirs,
                 _typed(doc, "checked_ns", int), info, error, _typed(doc, "entry_point", str),
                 sig, enforced)
