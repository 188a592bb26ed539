"""The manifest's literal reader: from a syntax tree to a checked ``ModuleInfo``.

The ``__livemod__`` assignment is found among the module-level statements (code in
if/try/with runs at import, so it counts; function and class bodies do not), and each value
is read with :func:`ast.literal_eval` on its own node, so nothing of the module ever runs.
Every problem is a ManifestError with file, line and the dotted field.
"""

from __future__ import annotations

import ast
import difflib
import io
import keyword
import threading
import tokenize
from types import MappingProxyType
from typing import Final, NoReturn

from . import _manifest_limits as _limits
from ._metadata import MANIFEST_NAME, MISSING, PARAM_TYPES, ModuleInfo, ParamSpec
from ._names import nfkc_problem
from ._version import ALIAS_RE, NAME_RE, Requirement, is_pattern, parse_version
from .errors import ManifestError

__all__ = ["parse_source", "read_tree", "share"]

_TOP_KEYS: Final = ("name", "version", "description", "license", "author", "depends",
                    "aliases", "params")
_PARAM_KEYS: Final = ("type", "default", "writable", "doc")


def read_tree(tree: ast.Module, *, path: str, source_file: str, is_package: bool) -> ModuleInfo:
    """The manifest of a parsed module (ManifestError naming file, line and field)."""
    return _Reader(source_file, path, is_package).read(tree)


def parse_source(source: bytes, source_file: str) -> ast.Module:
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


#: Short manifest strings that repeat between modules ("MIT", "1.0", a parameter's name) are
#: kept once here rather than once per module as ``ast`` made them. Not ``sys.intern``:
#: on 3.12+ interned strings are immortal, and a module's own strings must not outlive it
#: without bound. The table stops growing at ``_SHARED_MAX`` entries.
_SHARED: Final[dict[str, str]] = {}
_SHARED_MAX: Final = 1024
_SHARED_LEN: Final = 64
_shared_lock: Final = threading.Lock()  # protects: growth of _SHARED (3.13t)


def share(value: str) -> str:
    """``value``, or the equal string already kept (see ``_SHARED``)."""
    found = _SHARED.get(value)
    if found is not None:
        return found
    if len(value) <= _SHARED_LEN and len(_SHARED) < _SHARED_MAX:
        with _shared_lock:
            return _SHARED.setdefault(value, value)
    return value


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
        text["license"], text["author"] = share(text["license"]), share(text["author"])
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
        return share(version.strip())

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
            if not (NAME_RE.fullmatch(alias) or ALIAS_RE.fullmatch(alias)):
                self.fail(node, "aliases", f"invalid alias {alias!r} (use letters, digits, "
                          f"'_', '.', '-', and for request() keys ':', '/', '+'; patterns "
                          f"may use '*', '?' and '[...]')")
            if is_pattern(alias) and alias.count("[") != alias.count("]"):
                self.fail(node, "aliases", f"alias pattern {alias!r} has an unclosed '[' "
                          f"(write a set as [abc], or drop the bracket)")
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
            specs[pname] = self.read_param(share(pname), spec_node)
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
        ptype = PARAM_TYPES[PARAM_TYPES.index(ptype)]  # the one shared object
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
