"""depmod: an index of every module on the modpath, so that lookups do not re-read files.

Like the kernel's ``modules.dep``, the index of a modpath folder may be saved in that folder
(``.livemod-depmod.json``). Per module it keeps the manifest (what modinfo shows) or, for a
broken module, its error; per file (every ``.py`` of a package too) size, mtime and SHA-256.
A folder that cannot be written keeps its index in memory only.

The index is a cache, so every answer is checked against the file system, as cheaply as an
answer under a millisecond allows:

* a lookup stats each modpath folder: another mtime means a module was added, removed or
  renamed there, and the folder is listed again; only entries whose stamps changed are read;
* the module found is checked by a stat of its own files (and, for a package, its folders)
  and read again first if one changed;
* a miss re-checks every entry before answering None: an edit in place (which leaves the
  folder's mtime alone) may have given a module this name or alias.

Racy stamps, as git calls them: mtimes come from a coarse clock (a kernel tick; whole
seconds on some file systems), so a file changed just after we read it can keep its mtime
and size. A stamp less than a window older than our read is not trusted: the file is hashed
again at the next check, and parsed again only if the hash differs.

Nothing of a module runs here: manifests are read with :mod:`ast` (see ``_manifest``), and an
entry point's module is located with the import system's finders, importing neither it nor
its parent packages. The index is not thread-safe; ``ModPath`` serialises access to it.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Final, final

from ._depmod_entry import (
    FORMAT,
    FORMAT_VERSION,
    DepmodReport,
    Entry,
    FileStamp,
    Precheck,
    entry_from_json,
    entry_to_json,
    fits,
    racy,
    read_entry,
    reread,
)
from ._manifest import read_manifest
from ._metadata import ModuleInfo
from ._version import is_pattern
from .errors import LivemodError, ManifestError, ModuleNotFound, SignatureError

__all__ = [
    "ENTRY_POINT_GROUP",
    "INDEX_NAME",
    "DepmodReport",
    "Entry",
    "FileStamp",
    "Index",
    "build_index",
    "open_index",
]

INDEX_NAME: Final = ".livemod-depmod.json"
ENTRY_POINT_GROUP: Final = "livemod.modules"


# -- folders ---------------------------------------------------------------------------------


class _Folder:
    """One modpath folder's part of the index: entries by name in the folder, sorted."""

    __slots__ = ("entries", "mtime_ns", "path", "precheck", "scanned_ns")

    def __init__(self, path: str, mtime_ns: int | None = None, scanned_ns: int = 0,
                 entries: dict[str, Entry] | None = None) -> None:
        self.precheck: Precheck | None = None  # the signature check, under enforce
        self.path = path
        self.mtime_ns = mtime_ns  # None: the folder did not exist at the last scan
        self.scanned_ns = scanned_ns
        self.entries: dict[str, Entry] = entries or {}

    def scan(self, *, full: bool) -> None:
        """List the folder again; read only new entries and those whose stamps changed."""
        scanned = time.time_ns()
        try:
            mtime: int | None = os.stat(self.path).st_mtime_ns
            with os.scandir(self.path) as listing:
                items = sorted(listing, key=lambda item: item.name)
        except OSError:
            mtime, items = None, []
        entries: dict[str, Entry] = {}
        for item in items:
            if item.name.startswith((".", "_")):
                continue  # hidden files, __init__.py, helpers and our own index file
            if not ((item.is_file() and item.name.endswith(".py")) or (
                    item.is_dir() and os.path.isfile(os.path.join(item.path, "__init__.py")))):
                continue
            old = self.entries.get(item.name)
            if old is not None and not full and fits(old, self.precheck):
                entries[item.name] = old
            else:
                entries[item.name] = read_entry(self.path, item.name, item.path,
                                                 None if full else old, precheck=self.precheck)
        self.entries, self.mtime_ns, self.scanned_ns = entries, mtime, scanned

    def check(self) -> bool:
        """Scan again if the folder's mtime moved (or is racy); True if it did."""
        try:
            mtime: int | None = os.stat(self.path).st_mtime_ns
        except OSError:
            mtime = None
        if mtime == self.mtime_ns and (mtime is None or not racy(mtime, self.scanned_ns)):
            return False
        self.scan(full=False)
        return True


# -- entry points ----------------------------------------------------------------------------


def _locate_module(modname: str) -> str:
    """The ``.py`` file or package folder of an importable module, found without importing.

    ``importlib.util.find_spec`` would import the parent packages of a dotted name, so each
    level is asked of the meta path finders directly, as the import system itself does.
    """
    locations: list[str] | None = None
    spec = None
    parts = modname.split(".")
    for depth in range(1, len(parts) + 1):
        fullname = ".".join(parts[:depth])
        loaded = sys.modules.get(fullname)
        spec = getattr(loaded, "__spec__", None) if loaded is not None else None
        try:
            if spec is None and depth == 1:
                spec = importlib.util.find_spec(fullname)  # top level: finders only
            elif spec is None:
                for finder in sys.meta_path:
                    find_spec = getattr(finder, "find_spec", None)
                    spec = find_spec(fullname, locations, None) if find_spec else None
                    if spec is not None:
                        break
        except (ImportError, ValueError) as exc:  # a finder's own refusal, or no __spec__
            raise ModuleNotFound(f"module {fullname!r} cannot be located: {exc}",
                                 module=modname) from None
        if spec is None:
            raise ModuleNotFound(f"module {fullname!r} cannot be found on sys.path (install "
                                 "its distribution, or fix the entry point)", module=modname)
        if depth < len(parts):
            found = getattr(loaded, "__path__", None) or spec.submodule_search_locations
            if not found:
                raise ModuleNotFound(f"{fullname!r} is not a package, so it has no module "
                                     f"{modname!r} (fix the entry point)", module=modname)
            locations = list(found)
    assert spec is not None
    origin = spec.origin or ""
    if spec.submodule_search_locations is not None and origin.endswith("__init__.py"):
        return os.path.dirname(origin)
    if spec.submodule_search_locations is None and origin.endswith(".py"):
        return origin
    raise ManifestError(f"module {modname!r} ({origin or 'a namespace package'}) is not a .py "
                        "file or a package with __init__.py, which livemod needs", module=modname)


def _discover(old: Sequence[Entry], precheck: Precheck | None) -> list[Entry]:
    """Every entry point of the group, in (distribution, name) order; unchanged ones kept."""
    previous = {entry.slot: entry for entry in old}
    found: dict[str, tuple[str, str]] = {}
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist.name if ep.dist is not None else "?"
        # The same distribution may be on sys.path twice; the first one is what imports.
        found.setdefault(f"{dist}:{ep.name}", (f"{ep.name} = {ep.value} ({dist})", ep.module))
    entries: list[Entry] = []
    for slot in sorted(found):
        described, modname = found[slot]
        try:
            path = _locate_module(modname)
        except Exception as exc:  # a third-party finder may raise anything: list it, go on
            where = f"<entry point {described}>"
            entries.append(Entry("", slot, where, where, False, (), (), time.time_ns(), None,
                                 (type(exc).__name__, f"entry point {described}: {exc}"),
                                 described))
            continue
        prev = previous.get(slot)
        if prev is not None and prev.path == path and fits(prev, precheck):
            entries.append(prev)
        else:
            entries.append(read_entry("", slot, path, prev, described, precheck))
    return entries


# -- the index -------------------------------------------------------------------------------


def _matches(info: ModuleInfo, name: str) -> bool:
    return info.name == name or name in info.aliases


@final
class Index:
    """Every module on the modpath folders, then those of ``livemod.modules`` entry points."""

    __slots__ = ("_eps", "_folders", "_keys", "_precheck")

    def __init__(self, folders: list[_Folder], entry_points: list[Entry] | None,
                 precheck: Precheck | None = None) -> None:
        self._precheck = precheck  # under enforce: every module's signature before its parse
        for folder in folders:
            folder.precheck = precheck
        self._folders = folders
        self._eps = entry_points  # None: entry points are not searched
        self._keys: dict[str, list[Entry]] | None = None  # name/alias -> entries, search order

    @property
    def folders(self) -> tuple[str, ...]:
        """The modpath folders, in search order."""
        return tuple(folder.path for folder in self._folders)

    def entries(self) -> list[Entry]:
        """Every entry, broken ones too, in search order (as indexed; nothing is checked)."""
        out = [entry for folder in self._folders for entry in folder.entries.values()]
        return out + list(self._eps or ())

    def modules(self) -> tuple[ModuleInfo, ...]:
        """The usable modules, in search order."""
        return tuple(entry.info for entry in self.entries() if entry.info is not None)

    def broken(self) -> tuple[tuple[str, str], ...]:
        """``(path, "ErrorClass: message")`` of every module that cannot be read."""
        return tuple((entry.path, f"{entry.error[0]}: {entry.error[1]}")
                     for entry in self.entries() if entry.error is not None)

    def find(self, name: str) -> ModuleInfo | None:
        """The first module, in search order, whose name or alias is ``name``; or None.

        A file named after ``name`` (``name.py`` or ``name/``, folder by folder) is tried
        first, as before there was an index.

        Raises:
            ManifestError: the file named after ``name`` is broken (its own error, with file,
                line and field), or declares another name and no other module is ``name``.
            SignatureError: under enforce, the file named after ``name`` is not signed by a
                trusted key (it was not parsed).
            ModuleNotFound: the file named after ``name`` vanished while being read.
        """
        if any([folder.check() for folder in self._folders]):
            self._keys = None
        found = self._find_once(name)
        if not isinstance(found, ModuleInfo):
            # A miss may hide an edit in place that added this name: look at everything once.
            self.refresh()
            found = self._find_once(name)
        if isinstance(found, LivemodError):
            raise found
        return found

    def patterns(self) -> list[tuple[str, ModuleInfo]]:
        """``(alias pattern, module)`` for every alias pattern (``"codec:image/*"``) of a
        usable module, in search order: what ``Host.request`` matches against."""
        if any([folder.check() for folder in self._folders]):
            self._keys = None
        found = []
        for key, entries in self._key_map().items():
            if is_pattern(key):
                found += [(key, e.info) for e in entries if e.info is not None]
        order = {id(e.info): i for i, e in enumerate(self.entries())}
        return sorted(found, key=lambda pair: order.get(id(pair[1]), len(order)))

    def candidates(self) -> list[str]:
        """Every module file and package folder, broken ones too, in search order."""
        if any([folder.check() for folder in self._folders]):
            self._keys = None
        return [e.path for e in self.entries() if not e.path.startswith("<entry point")]

    def refresh(self, *, full: bool = False) -> None:
        """Bring the index up to date: list every folder again (stat every entry, read the
        changed ones; ``full`` reads everything) and find the entry points again."""
        for folder in self._folders:
            folder.scan(full=full)
        if self._eps is not None:
            self._eps = _discover(() if full else self._eps, self._precheck)
        self._keys = None

    def depmod(self, *, full: bool = False, write: bool = True,
               refresh: bool = True) -> DepmodReport:
        """Refresh the index and save each folder's part in it (``.livemod-depmod.json``).

        A folder that cannot be written (read-only, not ours) is listed in ``unwritable``;
        its index stays in memory. Never raises for a broken module: it is in ``broken``.
        ``refresh=False`` skips the refresh, for an index read from the files just now.
        """
        started = time.perf_counter()
        if refresh:
            self.refresh(full=full)
        written: list[str] = []
        unwritable: list[tuple[str, str]] = []
        for folder in self._folders if write else ():
            target = os.path.join(folder.path, INDEX_NAME)
            try:
                _write_atomic(target, self._dump([folder], None))
            except OSError as exc:
                unwritable.append((folder.path, exc.strerror or str(exc)))
            else:
                written.append(target)
        return DepmodReport(
            modules=self.modules(), broken=self.broken(), entry_points=len(self._eps or ()),
            written=tuple(written), unwritable=tuple(unwritable),
            seconds=time.perf_counter() - started,
        )

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the whole index as JSON, atomically (temp file, fsync, rename).

        Raises:
            OSError: the file cannot be written; nothing was replaced.
        """
        _write_atomic(os.fspath(path), self._dump(self._folders, self._eps))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Index:
        """Read an index written by :meth:`save` or :meth:`depmod`.

        Raises:
            OSError: the file cannot be read.
            ManifestError: it is not a livemod depmod index of this format version.
        """
        text = os.fspath(path)
        with open(text, "rb") as fh:
            raw = fh.read()
        try:
            doc = json.loads(raw)
            if doc["format"] != FORMAT or doc["version"] != FORMAT_VERSION:
                raise ValueError(f"format {doc['format']!r} version {doc['version']!r}, "
                                 f"expected {FORMAT!r} version {FORMAT_VERSION}")
            folders = [
                _Folder(str(part["folder"]), part["mtime_ns"], int(part["scanned_ns"]),
                        {e.slot: e for e in (entry_from_json(item, str(part["folder"]))
                                             for item in part["modules"])})
                for part in doc["folders"]
            ]
            eps = doc["entry_points"]
            entry_points = None if eps is None else [entry_from_json(e, "") for e in eps]
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise ManifestError(f"{text}: is not a usable livemod depmod index ({exc}); "
                                "run depmod to write it again", path=text) from None
        return cls(folders, entry_points)

    # -- private ---------------------------------------------------------------------------

    def _find_once(self, name: str) -> ModuleInfo | LivemodError | None:
        mismatch: ManifestError | None = None
        for folder in self._folders:
            for slot in (name + ".py", name):
                entry = folder.entries.get(slot)
                fresh = self._fresh(entry) if entry is not None else None
                if fresh is None:
                    continue
                if fresh.error is not None and fresh.error[0] == "SignatureError":
                    return SignatureError(fresh.error[1], module=name)  # never parsed
                # The file asked for by name raises its own error (read again for its line).
                info = fresh.info if fresh.info is not None else read_manifest(fresh.path)
                if _matches(info, name):
                    return info
                mismatch = ManifestError(
                    f"{fresh.path}: declares the name {info.name!r}, not {name!r} "
                    f"(rename the file or fix the manifest's name)",
                    module=name, path=fresh.path, field="name",
                )
        for entry in list(self._key_map().get(name, ())):
            fresh = self._fresh(entry)
            if fresh is not None and fresh.info is not None and _matches(fresh.info, name):
                return fresh.info
        return mismatch

    def _fresh(self, entry: Entry) -> Entry | None:
        """``entry`` checked by stat and read again if it changed; None if it is gone."""
        if fits(entry, self._precheck):
            return entry
        new = reread(entry, self._precheck)
        self._keys = None
        if entry.folder:
            folder = next(f for f in self._folders if f.path == entry.folder)
            if folder.entries.get(entry.slot) is entry:  # a scan may have replaced it already
                if new is None:
                    del folder.entries[entry.slot]
                else:
                    folder.entries[entry.slot] = new
        elif self._eps is not None and entry in self._eps:
            at = self._eps.index(entry)
            self._eps[at:at + 1] = [] if new is None else [new]
        return new

    def _key_map(self) -> dict[str, list[Entry]]:
        if self._keys is None:
            keys: dict[str, list[Entry]] = {}
            for entry in self.entries():
                if entry.info is not None:
                    for key in (entry.info.name, *entry.info.aliases):
                        keys.setdefault(key, []).append(entry)
            self._keys = keys
        return self._keys

    @staticmethod
    def _dump(folders: Sequence[_Folder], eps: Sequence[Entry] | None) -> bytes:
        doc = {
            "format": FORMAT, "version": FORMAT_VERSION,
            "folders": [{"folder": f.path, "mtime_ns": f.mtime_ns, "scanned_ns": f.scanned_ns,
                         "modules": [entry_to_json(e) for e in f.entries.values()]}
                        for f in folders],
            "entry_points": None if eps is None else [entry_to_json(e) for e in eps],
        }
        return json.dumps(doc, separators=(",", ":")).encode()


def _write_atomic(path: str, data: bytes) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".livemod-depmod.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; the index is no more secret than the modules
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    # The rename is durable only once the folder itself is synced.
    with contextlib.suppress(OSError):
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def build_index(folders: Sequence[str | os.PathLike[str]], *,
                entry_points: bool = True, precheck: Precheck | None = None) -> Index:
    """Read every module of ``folders`` (and of ``livemod.modules`` entry points) afresh.

    Broken modules are indexed with their error; a missing folder is indexed as empty.
    ``precheck``: the signature check before each parse (under enforce).
    """
    index = Index([_Folder(os.path.abspath(os.fspath(p))) for p in folders],
                  [] if entry_points else None, precheck)
    index.refresh(full=True)
    return index


def open_index(folders: Sequence[str | os.PathLike[str]], *, entry_points: bool = True,
               verify: bool = False, full: bool = False,
               precheck: Precheck | None = None) -> Index:
    """An index of ``folders`` that starts from each folder's saved index where it is usable.

    A saved index is only a head start: its folder is listed again if its mtime moved, and
    each module's stamps are checked before it is returned, as for any other entry.

    Args:
        verify: check every entry now (by stat; only changed modules are parsed), not on
            lookup; what depmod needs.
        full: ignore saved indexes and read every module afresh.
        precheck: the signature check before each parse (under enforce); a saved entry
            made under the other policy is read again.
    """
    parts: list[_Folder] = []
    for raw in folders:
        path = os.path.abspath(os.fspath(raw))
        saved: _Folder | None = None
        if not full:
            with contextlib.suppress(OSError, ManifestError):
                loaded = Index.load(os.path.join(path, INDEX_NAME))._folders
                saved = loaded[0] if len(loaded) == 1 and loaded[0].path == path else None
        if saved is None or verify:
            saved = saved or _Folder(path)
            saved.precheck = precheck
            saved.scan(full=full)
        parts.append(saved)
    return Index(parts, _discover((), precheck) if entry_points else None, precheck)
