"""A bytecode cache keyed by the hash of the bytes that were read.

Every load reads a module's files once into memory (``_source``), checks them (a signature
covers those very bytes) and compiles them. Compiling is most of what a warm ``import``
avoids with ``__pycache__``; livemod cannot use ``__pycache__`` -- a ``.pyc`` next to the
module is validated by the file's mtime, not by what was read and verified, and writing
into a module's folder is not ours to do. So the cache key is a digest of exactly what is
compiled: the interpreter's magic number, the optimisation level, the file name the code
object will carry, and the bytes. Same bytes, same code; different bytes can never hit.

An entry also keeps what the loader derived from the same bytes and wants again next time
(the module's checked manifest: reading it with ``ast`` costs more than unmarshalling the
code), so a warm load reads one file besides the module.

Kept in livemod's own folder (``$LIVEMOD_CACHE_DIR``, else ``$XDG_CACHE_HOME/livemod``,
else ``~/.cache/livemod``), flat under ``bytecode/`` (a subfolder per key prefix cost a
``mkdir`` for most writes to a young cache, as much as the write itself). Safe under
concurrent writers: each entry is written to a temporary file and renamed into place, so a
reader sees a whole entry or none; an entry also carries a digest of its payload, so a
torn or corrupt one is a miss. Bounded: past ``MAX_ENTRIES`` the oldest entries are
removed. ``LIVEMOD_BYTECODE_CACHE=0`` turns it off; ``-B`` (``PYTHONDONTWRITEBYTECODE``)
stops writing to it, as for ``__pycache__``. Any failure of the cache (read-only
disk, full disk) falls back to compiling.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import marshal
import os
import sys
import threading
from types import CodeType
from typing import Final, final

from ._cache_root import root

__all__ = ["Entry", "cache_dir", "compile_cached", "enabled", "lookup"]

#: Most entries kept; past it, the oldest (by modification time) are removed.
MAX_ENTRIES: Final = 4096
_HEADER: Final = b"LMBC2\n"  # 2: flat folder, (code, extra) tuples
_DIGEST: Final = 32
_lock = threading.Lock()  # protects: _writes (the count since the last prune)
_writes = 0


def enabled() -> bool:
    """Whether the cache is on (``LIVEMOD_BYTECODE_CACHE=0`` / ``off`` turns it off)."""
    return os.environ.get("LIVEMOD_BYTECODE_CACHE", "1").lower() not in ("0", "off", "no",
                                                                         "false")


def cache_dir() -> str:
    """The folder bytecode is cached in."""
    return os.path.join(root(), "bytecode")


_SEED: Final = hashlib.blake2b(digest_size=20)
_SEED.update(importlib.util.MAGIC_NUMBER)
_SEED.update(str(sys.flags.optimize).encode())  # fixed for the life of the process


def _key(source: bytes, filename: str) -> str:
    h = _SEED.copy()
    h.update(os.fsencode(filename))
    h.update(b"\0")
    h.update(source)
    return h.hexdigest()


@final
class Entry:
    """One cache entry, looked up: the code and the record kept with it, if it was there.

    ``extra`` is whatever the writer kept beside the code (the loader keeps the module's
    checked manifest there), made of the types ``marshal`` writes, never anything that
    runs code when read.
    """

    __slots__ = ("code", "extra", "path")

    def __init__(self, path: str, code: CodeType | None, extra: object) -> None:
        self.path = path
        self.code = code
        self.extra = extra

    def store(self, code: CodeType, extra: object = None) -> None:
        """Write ``code`` (and ``extra``) under this entry's key -- unless the interpreter
        was told not to write bytecode (``-B``, ``PYTHONDONTWRITEBYTECODE``), which this
        cache honours as ``import`` does for ``__pycache__``; reading is still done."""
        self.code, self.extra = code, extra
        if self.path and not sys.dont_write_bytecode:
            _write(self.path, code, extra)


def lookup(source: bytes, filename: str) -> Entry:
    """The entry for exactly these bytes compiled under ``filename`` (empty if none, or if
    the cache is off)."""
    if not enabled():
        return Entry("", None, None)
    path = os.path.join(cache_dir(), _key(source, filename))
    found = _read(path)
    return Entry(path, None, None) if found is None else Entry(path, *found)


def compile_cached(source: bytes, filename: str) -> CodeType:
    """``compile(source, filename, "exec", dont_inherit=True)``, through the cache.

    Raises what ``compile`` raises (SyntaxError, ValueError) for code that does not compile;
    nothing is cached for it.
    """
    entry = lookup(source, filename)
    if entry.code is not None:
        return entry.code
    code = compile(source, filename, "exec", dont_inherit=True)
    entry.store(code)
    return code


def _read(path: str) -> tuple[CodeType, object] | None:
    try:
        fd = os.open(path, os.O_RDONLY | _CLOEXEC)
    except OSError:
        return None
    try:
        data = os.read(fd, os.fstat(fd).st_size + 1)
    except OSError:
        return None
    finally:
        os.close(fd)
    head = len(_HEADER) + _DIGEST
    if not data.startswith(_HEADER) or len(data) < head:
        return None
    payload = data[head:]
    if hashlib.blake2b(payload, digest_size=_DIGEST).digest() != data[len(_HEADER):head]:
        return None
    try:
        found = marshal.loads(payload)
    except (EOFError, ValueError, TypeError):
        return None
    if type(found) is not tuple or len(found) != 2 or type(found[0]) is not CodeType:
        return None
    return found[0], found[1]


_CLOEXEC: Final = getattr(os, "O_CLOEXEC", 0)


def _write(path: str, code: CodeType, extra: object = None) -> None:
    global _writes
    try:
        payload = marshal.dumps((code, extra))  # type: ignore[arg-type]
    except ValueError:  # an extra that marshal cannot write: keep the code alone
        payload = marshal.dumps((code, None))
    data = _HEADER + hashlib.blake2b(payload, digest_size=_DIGEST).digest() + payload
    try:
        _write_atomic(path, data)
    except OSError:
        return  # a cache that cannot be written only costs a compile next time
    with _lock:
        _writes += 1
        due = _writes % 1024 == 1  # a scan of the whole cache: not too often
    if due:
        prune()


def _write_atomic(path: str, data: bytes) -> None:
    # As importlib writes a .pyc: a temporary name of this process and thread (no random
    # names to draw, no folder to stat first: it is made only when the open says it is
    # missing), then a rename, so a concurrent reader sees all of an entry or none.
    folder, name = os.path.split(path)
    tmp = os.path.join(folder, f".tmp-{name}-{os.getpid()}-{threading.get_ident()}")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(tmp, flags, 0o600)
    except FileNotFoundError:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        fd = os.open(tmp, flags, 0o600)
    except FileExistsError:  # left by a crash of a process that had our pid
        os.unlink(tmp)
        fd = os.open(tmp, flags, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def prune(limit: int = MAX_ENTRIES) -> int:
    """Remove the oldest entries past ``limit``; return how many were removed."""
    root = cache_dir()
    entries: list[tuple[float, str]] = []
    try:
        for item in os.scandir(root):
            if item.is_dir(follow_symlinks=False):  # the first format's subfolders
                _add_entries(item.path, entries)
        _add_entries(root, entries)
    except OSError:
        return 0
    if len(entries) <= limit:
        return 0
    entries.sort()
    removed = 0
    for _, victim in entries[: len(entries) - limit]:
        try:
            os.unlink(victim)
            removed += 1
        except OSError:
            pass
    return removed


def _add_entries(folder: str, entries: list[tuple[float, str]]) -> None:
    for item in os.scandir(folder):
        if item.name.startswith(".tmp-") or item.is_dir(follow_symlinks=False):
            continue  # a write under way; a folder
        try:
            entries.append((item.stat(follow_symlinks=False).st_mtime, item.path))
        except OSError:
            continue
