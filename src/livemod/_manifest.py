"""Static module metadata: the ``__livemod__`` manifest, read without executing the module.

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
import difflib
import enum
import errno
import hashlib
import io
import keyword
import os
import re
import stat
import threading
import tokenize
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, NoReturn, final

from livemod import _manifest_limits as _limits
from livemod._names import nfkc_problem
from livemod.errors import ManifestError, ModuleNotFound

__all__ = [
    "MISSING",
    "ModuleInfo",
    "ParamSpec",
    "Requirement",
    "locate",
    "parse_manifest",
    "parse_version",
    "read_manifest",
]

MANIFEST_NAME: Final = "__livemod__"
PARAM_TYPES: Final = ("str", "int", "float", "bool", "list")
_TOP_KEYS: Final = ("name", "version", "description", "license", "author", "depends",
                    "aliases", "params")
_PARAM_KEYS: Final = ("type", "default", "writable", "doc")
_ALIAS_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")


class _MissingType(enum.Enum):
    # An enum member is the sentinel idiom mypy understands, and it survives copy and pickle.
    MISSING = "MISSING"

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = _MissingType.MISSING
"""The ``default`` of a parameter that has none (and is therefore required)."""


@final
@dataclass(frozen=True, slots=True)
class ParamSpec:
    """One declared module parameter.

    ``default`` is already of the declared ``type`` (a list default is a tuple), or
    :data:`MISSING` when the parameter must be given.
    """

    name: str
    type: str
    default: object = MISSING
    writable: bool = False
    doc: str = ""

    @property
    def required(self) -> bool:
        """True when the parameter has no default and must be given at load time."""
        return self.default is MISSING


# -- versions -------------------------------------------------------------------------------

_VERSION_RE: Final = re.compile(
    r"""
    (?P<release>[0-9]+(?:\.[0-9]+)*)
    (?:[-_.]?(?P<pre>a|alpha|b|beta|rc|c)(?P<pre_n>[0-9]*))?
    (?:[-_.]?post(?P<post_n>[0-9]*))?
    (?:[-_.]?dev(?P<dev_n>[0-9]*))?
    (?:\+(?P<local>[A-Za-z0-9]+(?:[-_.][A-Za-z0-9]+)*))?
    """,
    re.VERBOSE | re.IGNORECASE,
)
_PRE_RANK: Final = {"a": 0, "alpha": 0, "b": 1, "beta": 1, "c": 2, "rc": 2}
_FINAL_RANK: Final = 3
_POST_RANK: Final = 4

VersionKey = tuple[tuple[int, ...], tuple[int, int, int, int], tuple[tuple[int, int, str], ...]]


def _release(match: re.Match[str]) -> tuple[int, ...]:
    return tuple(int(part) for part in match["release"].split("."))


def parse_version(version: str) -> VersionKey:
    """Return a key that orders versions the way PEP 440 does, for the simple forms we accept.

    Accepted: release numbers ``1.2.0``, optionally a pre-release (``a1``, ``b2``, ``rc1``),
    a post-release (``.post1``), a development release (``.dev3``) and a local label
    (``+abc``). ``1.2 == 1.2.0``, ``1.10 > 1.9``, ``1.0.dev1 < 1.0a1 < 1.0rc1 < 1.0``.

    Raises:
        ValueError: the text is not such a version.
    """
    match = _VERSION_RE.fullmatch(version.strip()) if isinstance(version, str) else None
    if match is None:
        raise ValueError(f"invalid version {version!r} (expected something like '1.2.0')")
    release = list(_release(match))
    # Trailing zeros carry no meaning: 1.2 and 1.2.0 are the same version.
    while release and release[-1] == 0:
        release.pop()
    pre, dev_n, post_n = match["pre"], match["dev_n"], match["post_n"]
    dev_key = (0, int(dev_n or 0)) if dev_n is not None else (1, 0)
    if pre is not None:
        phase = (_PRE_RANK[pre.lower()], int(match["pre_n"] or 0), *dev_key)
    elif post_n is not None:
        phase = (_POST_RANK, int(post_n or 0), *dev_key)
    elif dev_n is not None:
        # A bare .devN comes before every pre-release of the same release.
        phase = (-1, 0, *dev_key)
    else:
        phase = (_FINAL_RANK, 0, 1, 0)
    local: tuple[tuple[int, int, str], ...] = ()
    if match["local"]:
        # Numeric local segments sort after alphanumeric ones and among themselves by value.
        local = tuple(
            (1, int(seg), "") if seg.isdigit() else (0, 0, seg.lower())
            for seg in re.split(r"[-_.]", match["local"])
        )
    return (tuple(release), (phase[0], phase[1], phase[2], phase[3]), local)


# -- requirements ---------------------------------------------------------------------------

_CLAUSE_RE: Final = re.compile(r"(~=|==|!=|<=|>=|<|>)\s*(\S+)")


def _check_clause(op: str, version: str) -> None:
    if version.endswith(".*"):
        if op not in ("==", "!="):
            raise ValueError(f"a wildcard version like {version!r} needs == or !=, not {op}")
        if not re.fullmatch(r"[0-9]+(?:\.[0-9]+)*", version[:-2]):
            raise ValueError(f"invalid wildcard version {version!r} (expected e.g. '1.*')")
        return
    parse_version(version)
    head = _VERSION_RE.fullmatch(version)
    if op == "~=" and head is not None and len(_release(head)) < 2:
        raise ValueError(f"~={version} needs at least two release numbers, e.g. ~={version}.0")


def _prefix_match(version: str, prefix: str) -> bool:
    match = _VERSION_RE.fullmatch(version.strip())
    if match is None:
        raise ValueError(f"invalid version {version!r}")
    wanted = tuple(int(p) for p in prefix.split("."))
    release = _release(match) + (0,) * len(wanted)
    return release[: len(wanted)] == wanted


def _clause_ok(op: str, wanted: str, version: str) -> bool:
    if wanted.endswith(".*"):
        hit = _prefix_match(version, wanted[:-2])
        return hit if op == "==" else not hit
    have = parse_version(version)
    want = parse_version(wanted)
    if op in ("==", "!=") and not want[2]:
        # As in PEP 440, a constraint without a local label ignores the candidate's label.
        have = (have[0], have[1], ())
    if op == "~=":
        release = wanted.split("+")[0]
        head = _VERSION_RE.fullmatch(release)
        assert head is not None  # checked when the requirement was parsed
        prefix = ".".join(str(n) for n in _release(head)[:-1])
        return have >= want and _prefix_match(version, prefix)
    return {
        "==": have == want, "!=": have != want, "<=": have <= want,
        ">=": have >= want, "<": have < want, ">": have > want,
    }[op]


@final
@dataclass(frozen=True, slots=True)
class Requirement:
    """One ``depends`` entry: a module name and an optional version constraint."""

    name: str
    spec: str = ""

    @classmethod
    def parse(cls, text: str) -> Requirement:
        """Parse ``"log"``, ``"log>=1.2,<2"``, ``"log ~= 1.4"`` or ``"log==1.*"``.

        Raises:
            ValueError: with a message saying what is wrong with the text.
        """
        if not isinstance(text, str):
            raise ValueError(f"a requirement must be text such as 'log>=1.2', got {text!r}")
        stripped = text.strip()
        name_match = _ALIAS_RE.match(stripped)
        if name_match is None:
            raise ValueError(
                f"invalid requirement {text!r}: it must start with a module name, "
                "e.g. 'log' or 'log>=1.2,<2'"
            )
        name = name_match.group()
        rest = stripped[name_match.end():].strip()
        if not rest:
            return cls(name, "")
        clauses: list[str] = []
        for raw in rest.split(","):
            clause = _CLAUSE_RE.fullmatch(raw.strip())
            if clause is None:
                raise ValueError(
                    f"invalid requirement {text!r}: {raw.strip()!r} is not a constraint "
                    "(use comma-separated clauses with >=, <=, ==, !=, >, < or ~=, "
                    "e.g. 'log>=1.2,<2')"
                )
            op, version = clause.groups()
            try:
                _check_clause(op, version)
            except ValueError as exc:
                raise ValueError(f"invalid requirement {text!r}: {exc}") from None
            clauses.append(op + version)
        return cls(name, ",".join(clauses))

    def satisfied_by(self, version: str) -> bool:
        """True if ``version`` meets every clause of the constraint (always, if none).

        Raises:
            ValueError: ``version`` is not a valid version.
        """
        parse_version(version)
        if not self.spec:
            return True
        for clause in self.spec.split(","):
            match = _CLAUSE_RE.fullmatch(clause.strip())
            if match is None:
                raise ValueError(f"invalid constraint {clause!r} in {self}")
            if not _clause_ok(match[1], match[2], version):
                return False
        return True

    def __str__(self) -> str:
        return self.name + self.spec


@final
@dataclass(frozen=True, slots=True)
class ModuleInfo:
    """Everything known about a module without running it (what modinfo shows).

    ``path`` is what was given (the ``.py`` file or the package directory), absolute;
    ``source_file`` is the file holding the manifest (the file itself or ``__init__.py``).
    ``params`` is a read-only mapping in declaration order.
    """

    name: str
    version: str
    description: str
    license: str
    author: str
    depends: tuple[Requirement, ...]
    aliases: tuple[str, ...]
    params: Mapping[str, ParamSpec]
    path: str
    source_file: str
    is_package: bool


# -- locating -------------------------------------------------------------------------------


def locate(path: str | os.PathLike[str]) -> tuple[str, str, bool]:
    """Find the file that holds a module's manifest.

    Returns:
        ``(absolute path, absolute source file, is_package)``. A directory is a package and
        its source file is its ``__init__.py``; otherwise the path must be a ``.py`` file.
        Symbolic links are followed by the operating system (which refuses loops) but the
        returned paths are not rewritten to their targets.

    Raises:
        ModuleNotFound: nothing exists at the path.
        ManifestError: it exists but is not a ``.py`` file or a package directory.
    """
    abs_path = os.path.abspath(os.fspath(path))
    mode = _stat_mode(abs_path)
    if stat.S_ISDIR(mode):
        init = os.path.join(abs_path, "__init__.py")
        try:
            init_mode: int | None = os.stat(init).st_mode
        except OSError:
            init_mode = None
        if init_mode is None or not stat.S_ISREG(init_mode):
            raise ManifestError(
                f"{abs_path}: is a directory without __init__.py, so not a package "
                "(add __init__.py holding __livemod__, or give the module's .py file)",
                path=abs_path,
            )
        return abs_path, init, True
    if not stat.S_ISREG(mode) or not abs_path.endswith(".py"):
        raise ManifestError(
            f"{abs_path}: is not a .py file or a package directory "
            "(give a module's .py file or its package directory)",
            path=abs_path,
        )
    return abs_path, abs_path, False


def _stat_mode(abs_path: str) -> int:
    try:
        return os.stat(abs_path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        raise ModuleNotFound(
            f"no module at {abs_path}: the path does not exist (check the path)"
        ) from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            reason = "it is a symbolic link loop (fix the link)"
        else:
            reason = f"it cannot be examined: {exc.strerror} (check permissions)"
        raise ManifestError(f"{abs_path}: {reason}", path=abs_path) from None


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
        tree = _parse_source(source, source_file)
    info = _Reader(source_file, path, is_package).read(tree)
    with _PARSED_LOCK:
        if len(_PARSED) >= _PARSED_MAX:
            _PARSED.pop(next(iter(_PARSED)))
        _PARSED[key] = info
    return info


_PARSED: dict[tuple[str, str, bool, bytes], ModuleInfo] = {}
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
    tree = _parse_source(source, source_file)
    return _Reader(source_file, path, is_package).read(tree), tree


def _parse_source(source: bytes, source_file: str) -> ast.Module:
    def fail(line: int | None, what: str) -> NoReturn:
        where = f"{source_file}:{line}" if line is not None else source_file
        raise ManifestError(f"{where}: {what}", path=source_file, line=line)

    try:
        encoding, _ = tokenize.detect_encoding(io.BytesIO(source).readline)
    except SyntaxError as exc:
        fail(exc.lineno, f"cannot be decoded: {exc.msg} (save it as UTF-8, or fix its "
                         "'# -*- coding: ... -*-' line)")
    try:
        text = source.decode(encoding)
    except (UnicodeDecodeError, LookupError) as exc:
        line = source[: exc.start].count(b"\n") + 1 if isinstance(exc, UnicodeDecodeError) else 1
        fail(line, f"is not valid {encoding} text (save it as UTF-8, or declare its "
                   "encoding with a '# -*- coding: ... -*-' line)")
    try:
        return ast.parse(text, filename=source_file)
    except SyntaxError as exc:
        fail(exc.lineno, f"cannot be parsed as Python: {exc.msg} (fix the syntax error)")
    except ValueError as exc:  # null bytes, on 3.11
        fail(None, f"cannot be parsed as Python: {exc} (remove the offending bytes)")
    except (RecursionError, MemoryError):
        fail(None, "cannot be parsed as Python: it is nested too deeply (simplify it)")


def _closest(word: str, choices: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(word, choices, n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _bad_literal_node(node: ast.expr) -> ast.expr:
    # Descend into displays to point at the innermost part that is not a literal.
    children: list[ast.expr | None] = []
    if isinstance(node, ast.List | ast.Tuple | ast.Set):
        children = list(node.elts)
    elif isinstance(node, ast.Dict):
        for key, value in zip(node.keys, node.values, strict=True):
            children += [key if key is not None else value, value]
    for child in children:
        if child is not None and not _is_literal(child):
            return _bad_literal_node(child)
    return node


def _is_literal(node: ast.expr) -> bool:
    try:
        ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False
    return True


def _type_name(value: object) -> str:
    return type(value).__name__


class _Reader:
    """One manifest read: carries where we are, so errors can say file, line and field."""

    def __init__(self, source_file: str, path: str, is_package: bool) -> None:
        self.source_file = source_file
        self.path = path
        self.is_package = is_package
        self.module: str | None = None

    def fail(self, node: ast.AST | None, field_name: str | None, what: str) -> NoReturn:
        line: int | None = getattr(node, "lineno", None)
        where = f"{self.source_file}:{line}" if line is not None else self.source_file
        if field_name is None:
            message = f"{where}: {what}"
        else:
            message = f"{where}: __livemod__ field {field_name!r}: {what} (fix the manifest)"
        raise ManifestError(
            message, path=self.source_file, line=line, field=field_name, module=self.module
        )

    def literal(self, node: ast.expr, field_name: str | None) -> object:
        if isinstance(node, ast.Constant):  # most keys and values: skip literal_eval
            return node.value
        try:
            return ast.literal_eval(node)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            bad = _bad_literal_node(node)
            self.fail(bad, field_name, "must be a literal (no names, calls or expressions)")

    def dict_items(
        self, node: ast.expr, field_name: str | None
    ) -> list[tuple[str, ast.expr, ast.expr]]:
        if not isinstance(node, ast.Dict):
            got = _type_name(self.literal(node, field_name))
            self.fail(node, field_name, f"expected a dict, got {got}")
        items: list[tuple[str, ast.expr, ast.expr]] = []
        seen: set[str] = set()
        for key_node, value_node in zip(node.keys, node.values, strict=True):
            if key_node is None:
                self.fail(value_node, field_name,
                          "must be a literal (no names, calls or expressions)")
            key = self.literal(key_node, field_name)
            if not isinstance(key, str):
                self.fail(key_node, field_name, f"keys must be strings, got {key!r}")
            if key in seen:
                dotted = key if field_name is None else f"{field_name}.{key}"
                self.fail(key_node, dotted, "appears twice (keep one)")
            seen.add(key)
            items.append((key, key_node, value_node))
        return items

    def find_manifest(self, tree: ast.Module) -> ast.stmt:
        found: list[tuple[ast.stmt, ast.expr | None]] = []
        for stmt in _module_level_statements(tree.body):
            for target, value in _assigned(stmt):
                if isinstance(target, ast.Name) and target.id == MANIFEST_NAME:
                    found.append((stmt, value))
                elif (isinstance(target, ast.Subscript | ast.Attribute)
                      and isinstance(target.value, ast.Name)
                      and target.value.id == MANIFEST_NAME):
                    self.fail(stmt, None, f"{MANIFEST_NAME} is modified after it is assigned; "
                              "it must be one literal dict (move the change into it)")
        if not found:
            self.fail(None, None, f"has no {MANIFEST_NAME} manifest; "
                      f'add {MANIFEST_NAME} = {{"name": ...}} at top level')
        if len(found) > 1:
            first = found[0][0].lineno
            self.fail(found[1][0], None, f"{MANIFEST_NAME} is assigned more than once (first at "
                      f"line {first}); assign it exactly once, as a literal dict")
        stmt, value = found[0]
        if stmt not in tree.body or value is None or isinstance(stmt, ast.AugAssign):
            self.fail(stmt, None, f"{MANIFEST_NAME} must be assigned a literal dict directly at "
                      f'module top level (write {MANIFEST_NAME} = {{"name": ...}})')
        return stmt

    def read(self, tree: ast.Module) -> ModuleInfo:
        stmt = self.find_manifest(tree)
        value = stmt.value if isinstance(stmt, ast.Assign | ast.AnnAssign) else None
        if not isinstance(value, ast.Dict):
            self.fail(stmt, None, f"{MANIFEST_NAME} must be a dict display "
                      f'such as {MANIFEST_NAME} = {{"name": "greet"}}')
        items = {key: (key_node, node) for key, key_node, node in self.dict_items(value, None)}
        for key, (key_node, _) in items.items():
            if key not in _TOP_KEYS:
                self.fail(key_node, key, f"unknown key (allowed: {', '.join(_TOP_KEYS)})"
                          + _closest(key, _TOP_KEYS))
        if "name" not in items:
            self.fail(stmt, "name", "is required: give the module's name, e.g. \"name\": \"greet\"")
        name = self.read_name(items["name"][1])
        self.module = name
        version = self.read_version(items.get("version"))
        text = {k: self.read_str(items[k][1], k) if k in items else ""
                for k in ("license", "author", "description")}
        aliases = self.read_aliases(items.get("aliases"), name)
        depends = self.read_depends(items.get("depends"), name, aliases)
        params = self.read_params(items.get("params"))
        description = text["description"] if "description" in items else _summary(tree)
        return ModuleInfo(
            name=name, version=version, description=description, license=text["license"],
            author=text["author"], depends=depends, aliases=aliases,
            params=MappingProxyType(params), path=self.path, source_file=self.source_file,
            is_package=self.is_package,
        )

    def read_str(self, node: ast.expr, field_name: str) -> str:
        value = self.literal(node, field_name)
        if not isinstance(value, str):
            self.fail(node, field_name, f"expected a str, got {_type_name(value)} {value!r:.60}")
        return value

    def read_name(self, node: ast.expr) -> str:
        name = self.read_str(node, "name")
        if not name.isidentifier() or keyword.iskeyword(name):
            self.fail(node, "name", f"must be a valid Python identifier, got {name!r} "
                      "(use letters, digits and underscores, not starting with a digit)")
        problem = nfkc_problem(name)
        if problem is not None:
            self.fail(node, "name", problem)
        return name

    def read_version(self, entry: tuple[ast.expr, ast.expr] | None) -> str:
        if entry is None:
            return "0"
        node = entry[1]
        version = self.read_str(node, "version")
        try:
            parse_version(version)
        except ValueError as exc:
            self.fail(node, "version", str(exc))
        return version.strip()

    def read_str_list(
        self, node: ast.expr, field_name: str, limit: int
    ) -> list[tuple[str, ast.expr]]:
        if isinstance(node, ast.List | ast.Tuple) and len(node.elts) > limit:
            self.fail(node, field_name, f"{len(node.elts)} entries is over the limit "
                      f"{field_name} = {limit} (a manifest holds metadata only)")
        value = self.literal(node, field_name)
        if not isinstance(node, ast.List | ast.Tuple):
            self.fail(node, field_name, f"expected a list of str, got {_type_name(value)}")
        out: list[tuple[str, ast.expr]] = []
        for elt in node.elts:
            item = self.literal(elt, field_name)
            if not isinstance(item, str):
                self.fail(elt, field_name, f"expected a list of str, got an item {item!r:.60}")
            out.append((item, elt))
        return out

    def read_aliases(self, entry: tuple[ast.expr, ast.expr] | None, name: str) -> tuple[str, ...]:
        if entry is None:
            return ()
        aliases: dict[str, None] = {}  # ordered, and a membership test in O(1)
        for alias, node in self.read_str_list(entry[1], "aliases", _limits.LIMITS.aliases):
            if not _ALIAS_RE.fullmatch(alias):
                self.fail(node, "aliases", f"invalid alias {alias!r} (use letters, digits, "
                          "'_', '.' and '-', starting with a letter or '_')")
            if alias in aliases or alias == name:
                what = "the module's own name" if alias == name else "listed twice"
                self.fail(node, "aliases", f"duplicate alias {alias!r}: it is {what} "
                          "(remove it)")
            aliases[alias] = None
        return tuple(aliases)

    def read_depends(
        self, entry: tuple[ast.expr, ast.expr] | None, name: str, aliases: tuple[str, ...]
    ) -> tuple[Requirement, ...]:
        if entry is None:
            return ()
        reqs: dict[str, Requirement] = {}  # by name: duplicates found in O(1)
        own = {name, *aliases}
        for text, node in self.read_str_list(entry[1], "depends", _limits.LIMITS.depends):
            try:
                req = Requirement.parse(text)
            except ValueError as exc:
                self.fail(node, "depends", str(exc))
            if req.name in own:
                self.fail(node, "depends", f"{text!r} names this module itself (remove it)")
            if req.name in reqs:
                self.fail(node, "depends", f"duplicate dependency {req.name!r} "
                          "(merge the constraints into one entry, e.g. 'log>=1.2,<2')")
            reqs[req.name] = req
        return tuple(reqs.values())

    def read_params(self, entry: tuple[ast.expr, ast.expr] | None) -> dict[str, ParamSpec]:
        if entry is None:
            return {}
        specs: dict[str, ParamSpec] = {}
        node = entry[1]
        if isinstance(node, ast.Dict) and len(node.keys) > _limits.LIMITS.params:
            self.fail(node, "params", f"{len(node.keys)} entries is over the limit params = "
                      f"{_limits.LIMITS.params} (a manifest holds metadata only)")
        for pname, key_node, spec_node in self.dict_items(node, "params"):
            if not pname.isidentifier() or keyword.iskeyword(pname):
                self.fail(key_node, f"params.{pname}", "parameter names must be valid Python "
                          "identifiers (letters, digits and underscores)")
            specs[pname] = self.read_param(pname, spec_node)
        return specs

    def read_param(self, pname: str, node: ast.expr) -> ParamSpec:
        where = f"params.{pname}"
        items = self.dict_items(node, where)
        fields = {key: value for key, _, value in items}
        for key, key_node, _ in items:
            if key not in _PARAM_KEYS:
                self.fail(key_node, f"{where}.{key}", f"unknown parameter key (allowed: "
                          f"{', '.join(_PARAM_KEYS)})" + _closest(key, _PARAM_KEYS))
        if "type" not in fields:
            self.fail(node, f"{where}.type", f"is required: one of {', '.join(PARAM_TYPES)}")
        ptype = self.literal(fields["type"], f"{where}.type")
        if ptype not in PARAM_TYPES:
            self.fail(fields["type"], f"{where}.type",
                      f"expected one of {', '.join(PARAM_TYPES)}, got {ptype!r:.60}")
        assert isinstance(ptype, str)
        writable = self.literal(fields["writable"], f"{where}.writable") \
            if "writable" in fields else False
        if not isinstance(writable, bool):
            self.fail(fields["writable"], f"{where}.writable",
                      f"expected True or False, got {writable!r:.60}")
        doc = self.read_str(fields["doc"], f"{where}.doc") if "doc" in fields else ""
        default: object = MISSING
        if "default" in fields:
            default = self.read_default(ptype, fields["default"], f"{where}.default")
        return ParamSpec(name=pname, type=ptype, default=default, writable=writable, doc=doc)

    def read_default(self, ptype: str, node: ast.expr, where: str) -> object:
        ok, value = _as_declared(ptype, self.literal(node, where))
        if not ok:
            items = " (items must be str, int, float or bool)" if ptype == "list" else ""
            self.fail(node, where, f"expected a default of type {ptype}, got "
                      f"{_type_name(value)} {value!r:.60}{items}")
        return value


def _as_declared(ptype: str, value: object) -> tuple[bool, object]:
    # bool is an int subclass, but True is never a sensible count: only "bool" takes it.
    if isinstance(value, bool):
        return ptype == "bool", value
    if ptype == "str":
        return isinstance(value, str), value
    if ptype == "int":
        return isinstance(value, int), value
    if ptype == "float" and isinstance(value, int | float):
        return True, float(value)
    if ptype == "list" and isinstance(value, list | tuple):
        return all(isinstance(item, str | int | float) for item in value), tuple(value)
    return False, value


def _module_level_statements(body: list[ast.stmt]) -> list[ast.stmt]:
    # Code in if/try/with/loops at module level runs at import, so it counts; functions and
    # classes have their own scopes and do not.
    out: list[ast.stmt] = []
    for stmt in body:
        out.append(stmt)
        if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            continue
        for attr in ("body", "orelse", "finalbody"):
            out += _module_level_statements(getattr(stmt, attr, []))
        for handler in getattr(stmt, "handlers", []):
            out += _module_level_statements(handler.body)
        for case in getattr(stmt, "cases", []):
            out += _module_level_statements(case.body)
    return out


def _assigned(stmt: ast.stmt) -> list[tuple[ast.expr, ast.expr | None]]:
    if isinstance(stmt, ast.Assign):
        targets: list[ast.expr] = []
        for target in stmt.targets:
            targets += _flatten(target)
        # Only a plain single-name target receives the dict itself.
        direct = len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name)
        return [(t, stmt.value if direct else None) for t in targets]
    if isinstance(stmt, ast.AnnAssign) and stmt.value is None:
        return []  # a bare annotation assigns nothing
    if isinstance(stmt, ast.AnnAssign | ast.AugAssign):
        return [(stmt.target, stmt.value)]
    return []


def _flatten(target: ast.expr) -> list[ast.expr]:
    if isinstance(target, ast.Tuple | ast.List):
        return [t for elt in target.elts for t in _flatten(elt)]
    if isinstance(target, ast.Starred):
        return _flatten(target.value)
    return [target]


def _summary(tree: ast.Module) -> str:
    doc = ast.get_docstring(tree) or ""
    return next((line.strip() for line in doc.splitlines() if line.strip()), "")
