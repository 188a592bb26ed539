"""Static module metadata: the ``__livemod__`` manifest, read without executing the module.

This file is the entry point and the parse cache; the grammar of versions is in ``_version``,
locating a module in ``_locate``, the records in ``_metadata`` and the reader in
``_manifest_reader``.

modinfo, depmod and modprobe must be able to look at any file on the modpath, including
hostile or broken ones, so the manifest is found with :mod:`ast` and each value is read with
:func:`ast.literal_eval` on its node. Nothing of the module ever runs here, and the caller
hands in the bytes it read so that the loader compiles (and signing checks) exactly the bytes
that were described.

Every problem is a :class:`~livemod.errors.ManifestError` carrying file, line and the dotted
field, so an operator can jump straight to the mistake.
"""

from __future__ import annotations

import ast
import hashlib
import os
import re
import threading
from operator import attrgetter
from types import MappingProxyType
from typing import Final, NoReturn

from . import _manifest_limits as _limits
from ._locate import locate
from ._manifest_reader import parse_source, read_tree, share
from ._metadata import MANIFEST_NAME, MISSING, PARAM_TYPES, ModuleInfo, ParamSpec
from ._version import Requirement, parse_version
from .errors import ManifestError

__all__ = [
    "MANIFEST_NAME",
    "MISSING",
    "PARAM_TYPES",
    "ModuleInfo",
    "ParamSpec",
    "Requirement",
    "from_record",
    "locate",
    "parse_manifest",
    "parse_module",
    "parse_version",
    "read_manifest",
    "record_of",
]


def read_manifest(path: str | os.PathLike[str]) -> ModuleInfo:
    """Locate a module, read its source once and parse its manifest (never executes it).

    Raises:
        ModuleNotFound: nothing exists at the path.
        ManifestError: the module or its manifest is unusable.
    """
    abs_path, source_file, is_package = locate(path)
    try:
        with open(source_file, "rb") as fh:
            source = fh.read()
    except OSError as exc:
        raise ManifestError(
            f"{source_file}: cannot be read: {exc.strerror} (check permissions)",
            path=source_file,
        ) from None
    return parse_manifest(source, path=abs_path, source_file=source_file, is_package=is_package)


# -- parsing --------------------------------------------------------------------------------


def parse_manifest(source: bytes, *, path: str, source_file: str, is_package: bool) -> ModuleInfo:
    """Read the ``__livemod__`` manifest and docstring from a module's source bytes.

    The bytes are decoded as the interpreter would (UTF-8, or a PEP 263 coding cookie),
    parsed with :mod:`ast`, and only the manifest's literal values are evaluated.

    Raises:
        ManifestError: with ``path``, ``line`` and ``field`` of the first problem found.
    """
    # The same bytes always give the same (immutable) result: depmod, modprobe's lookup
    # and the load itself read each module once between them.
    key = (path, source_file, is_package, hashlib.sha256(source).digest())
    cached = _PARSED.get(key)
    if cached is not None:
        return cached
    tree = _prefix_tree(source, source_file)
    if tree is None:
        if len(source) > _limits.LIMITS.full_parse_bytes:
            _too_large(source_file, "full_parse_bytes", _limits.LIMITS.full_parse_bytes,
                       "bytes of module read whole to find it (write the manifest once, as "
                       "one top-level statement near the top, without a coding cookie)")
        tree = parse_source(source, source_file)
    info = read_tree(tree, path=path, source_file=source_file, is_package=is_package)
    with _PARSED_LOCK:
        if len(_PARSED) >= _PARSED_MAX:
            _PARSED.pop(next(iter(_PARSED)))
        _PARSED[key] = info
    return info


_PARSED: dict[tuple[str, str, bool, bytes], ModuleInfo] = {}  # in this process
_PARSED_LOCK: Final = threading.Lock()
_PARSED_MAX: Final = 20_000


#: A manifest assignment at the start of a line (top level): ``__livemod__ = {`` or
#: ``__livemod__: dict = {``.
_MANIFEST_AT = re.compile(rb"^__livemod__[ \t]*(?::[^=\n]*)?=", re.MULTILINE)
_COOKIE = re.compile(rb"^[ \t\f]*#.*?coding[:=]", re.MULTILINE)


def _prefix_tree(source: bytes, source_file: str) -> ast.Module | None:
    """Parse only the head of the module, through the manifest statement.

    Building Python AST objects for a whole module costs more than compiling it; the
    manifest and the docstring sit at its head. The statement's end is found by trying the
    lines that close a bracket (a premature end does not parse); each line is looked at
    once, on its own bytes, so the scan is linear. It stops at the manifest size limit.
    Any doubt -- the name appears more than once, a coding cookie, text that does not
    decode or parse -- returns None, and the caller parses everything (which also gives the
    precise error).
    """
    if source.count(b"__livemod__") != 1 or b"\0" in source or _COOKIE.search(source, 0, 400):
        return None
    found = _MANIFEST_AT.search(source)
    if found is None:
        return None
    try:
        source.decode("utf-8")  # the whole file: undecodable text anywhere is an error
    except UnicodeDecodeError:
        return None
    bound = found.start() + _limits.LIMITS.manifest_bytes
    tries = 0
    start = found.start()
    while tries < _PREFIX_TRIES:
        end = source.find(b"\n", start)
        line_end = len(source) if end < 0 else end
        if line_end > bound:
            _too_large(source_file, "manifest_bytes", _limits.LIMITS.manifest_bytes,
                       "bytes (from '__livemod__' to its closing brace at the end of a line)")
        if _closes(source[start:line_end]):
            tries += 1
            try:
                return ast.parse(source[:line_end].decode("utf-8"))
            except (SyntaxError, ValueError, UnicodeDecodeError, RecursionError, MemoryError):
                pass
        if end < 0:
            return None
        start = end + 1
    return None


def _closes(line: bytes) -> bool:
    """Whether ``line`` may end the manifest statement: it ends with a closing bracket,
    perhaps before a comment (a '#' inside a string only costs one more try)."""
    body = line.rstrip()
    if body.endswith((b"}", b")")):
        return True
    hash_at = body.rfind(b"#")
    return hash_at > 0 and body[:hash_at].rstrip().endswith((b"}", b")"))


def _too_large(source_file: str, limit: str, value: int, what: str) -> NoReturn:
    raise ManifestError(
        f"{source_file}: the __livemod__ manifest is over the limit {limit} = {value} {what} "
        f"(a manifest holds metadata only: keep it small)", path=source_file,
    )


_PREFIX_TRIES: Final = 4


def parse_module(
    source: bytes, *, path: str, source_file: str, is_package: bool
) -> tuple[ModuleInfo, ast.Module]:
    """Like :func:`parse_manifest` but always over the whole module, also returning the
    syntax tree (for precise errors about code that does not compile)."""
    tree = parse_source(source, source_file)
    return read_tree(tree, path=path, source_file=source_file, is_package=is_package), tree


# -- the checked manifest, kept with the module's bytecode ---------------------------------
#
# The bytecode cache (``_bytecode``) is keyed by the very bytes read, so what was read from
# them once holds for as long as the entry: the loader keeps the checked manifest in it, as
# plain data (what ``marshal`` writes; nothing that runs code when read), with what else
# the result depended on -- the paths, and the limits in force. A record made under other
# limits (or for another path) is not used: the manifest is read again, with its errors.

_RECORD: Final = 1  # the record's format
_LIMIT_VALUES: Final = attrgetter(*_limits.ManifestLimits.__slots__)


def record_of(info: ModuleInfo) -> tuple[object, ...]:
    """``info`` as plain data, for ``from_record``."""
    return (
        _RECORD, info.path, info.source_file, info.is_package, _LIMIT_VALUES(_limits.LIMITS),
        info.name, info.version, info.description, info.license, info.author,
        tuple((r.name, r.spec) for r in info.depends), info.aliases,
        tuple((p.name, p.type, p.default is not MISSING,
               None if p.default is MISSING else p.default, p.writable, p.doc)
              for p in info.params.values()),
    )


def from_record(record: object, *, path: str, source_file: str,
                is_package: bool) -> ModuleInfo | None:
    """The ``ModuleInfo`` of ``record_of``, if ``record`` was made for this path under the
    limits in force; else None (read the manifest)."""
    if type(record) is not tuple or len(record) != 13 or record[:5] != (
            _RECORD, path, source_file, is_package, _LIMIT_VALUES(_limits.LIMITS)):
        return None
    (*_, name, version, description, license_, author, depends, aliases, params) = record
    try:
        # The strings a read shares (``share``) are shared again: marshal made new ones.
        return ModuleInfo(
            name=name, version=share(version), description=description,
            license=share(license_), author=share(author),
            depends=tuple(Requirement(n, spec) for n, spec in depends), aliases=aliases,
            params=MappingProxyType({
                share(p): ParamSpec(share(p), PARAM_TYPES[PARAM_TYPES.index(t)],
                                    default if has else MISSING, writable, doc)
                for p, t, has, default, writable, doc in params}),
            path=path, source_file=source_file, is_package=is_package,
        )
    except (TypeError, ValueError):  # not a record of ours after all
        return None
