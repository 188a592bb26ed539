"""Static manifest reading: livemod._manifest."""

from __future__ import annotations

import contextlib
import os
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from livemod._manifest import (
    MISSING,
    ModuleInfo,
    ParamSpec,
    Requirement,
    locate,
    parse_manifest,
    parse_version,
    read_manifest,
)
from livemod.errors import ManifestError, ModuleNotFound

#: Examples per fuzz test: small in CI; LIVEMOD_FUZZ_EXAMPLES=20000 for a long run.
FUZZ_EXAMPLES = int(os.environ.get("LIVEMOD_FUZZ_EXAMPLES", "200"))

GREET = '''\
"""Greets people.

Longer text that is not the summary.
"""
__livemod__ = {
    "name": "greet", "version": "1.2.0", "license": "MIT", "author": "A. Person",
    "depends": ["log>=1.2, <2", "util"], "aliases": ["greeter", "hello.v1"],
    "params": {
        "greeting": {"type": "str", "default": "hello", "writable": True,
                     "doc": "word to greet with"},
        "ratio": {"type": "float", "default": 2},
        "tags": {"type": "list", "default": ["a", 1, True]},
        "target": {"type": "str"},
    },
}

def init(mod):
    pass
'''


def write(tmp_path: Path, text: str, name: str = "mod.py") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def manifest_error(tmp_path: Path, text: str) -> ManifestError:
    path = write(tmp_path, text)
    with pytest.raises(ManifestError) as info:
        read_manifest(path)
    assert info.value.path == str(path)
    assert str(path) in str(info.value)
    return info.value


# -- the happy path -----------------------------------------------------------------------------


def test_full_manifest(tmp_path: Path) -> None:
    path = write(tmp_path, GREET, "greet.py")
    info = read_manifest(path)
    assert isinstance(info, ModuleInfo)
    assert info.name == "greet"
    assert info.version == "1.2.0"
    assert info.description == "Greets people."
    assert (info.license, info.author) == ("MIT", "A. Person")
    assert info.depends == (Requirement("log", ">=1.2,<2"), Requirement("util", ""))
    assert [str(r) for r in info.depends] == ["log>=1.2,<2", "util"]
    assert info.aliases == ("greeter", "hello.v1")
    assert list(info.params) == ["greeting", "ratio", "tags", "target"]
    assert info.params["greeting"] == ParamSpec("greeting", "str", "hello", True,
                                                "word to greet with")
    assert info.params["ratio"].default == 2.0
    assert isinstance(info.params["ratio"].default, float)
    assert info.params["tags"].default == ("a", 1, True)
    assert info.params["target"].default is MISSING
    assert info.params["target"].required
    assert not info.params["greeting"].required
    assert (info.path, info.source_file, info.is_package) == (str(path), str(path), False)
    with pytest.raises(TypeError):
        info.params["x"] = ParamSpec("x", "str")  # type: ignore[index]


def test_minimal_defaults(tmp_path: Path) -> None:
    info = read_manifest(write(tmp_path, '__livemod__ = {"name": "tiny"}\n'))
    assert info.version == "0"
    assert (info.description, info.license, info.author) == ("", "", "")
    assert info.depends == () and info.aliases == () and dict(info.params) == {}


def test_description_overrides_docstring_and_annotated_assignment(tmp_path: Path) -> None:
    info = read_manifest(write(tmp_path, '''\
        """Docstring."""
        __livemod__: dict[str, object] = {"name": "a", "description": "From manifest"}
        '''))
    assert info.description == "From manifest"


def test_docstring_first_nonempty_line(tmp_path: Path) -> None:
    info = read_manifest(write(tmp_path, '"""\n\n   Summary here.  \nmore\n"""\n'
                                         '__livemod__ = {"name": "a"}\n'))
    assert info.description == "Summary here."


def test_missing_repr() -> None:
    assert repr(MISSING) == "MISSING"
    assert ParamSpec("x", "int").default is MISSING


def test_package_directory(tmp_path: Path) -> None:
    pkg = tmp_path / "web"
    pkg.mkdir()
    (pkg / "__init__.py").write_text('"""Web things."""\n__livemod__ = {"name": "web"}\n')
    info = read_manifest(pkg)
    assert info.is_package
    assert info.path == str(pkg)
    assert info.source_file == str(pkg / "__init__.py")
    assert info.description == "Web things."
    assert locate(str(pkg)) == (str(pkg), str(pkg / "__init__.py"), True)


def test_relative_path_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, '__livemod__ = {"name": "a"}\n', "a.py")
    monkeypatch.chdir(tmp_path)
    assert read_manifest("a.py").path == str(tmp_path / "a.py")


def test_never_executes_the_module(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    path = write(tmp_path, f'''\
        import pathlib
        pathlib.Path({str(marker)!r}).write_text("ran")
        raise SystemExit("the module body ran")
        __livemod__ = {{"name": "evil"}}
        ''')
    assert read_manifest(path).name == "evil"
    assert not marker.exists()


def test_parse_manifest_uses_the_given_bytes(tmp_path: Path) -> None:
    # The file on disk says something else: only the bytes handed in count.
    path = write(tmp_path, '__livemod__ = {"name": "on_disk"}\n')
    info = parse_manifest(b'__livemod__ = {"name": "in_memory"}\n', path=str(path),
                          source_file=str(path), is_package=False)
    assert info.name == "in_memory"


# -- encodings ----------------------------------------------------------------------------------


def test_latin1_with_coding_cookie(tmp_path: Path) -> None:
    path = tmp_path / "latin.py"
    path.write_bytes('# -*- coding: latin-1 -*-\n"""Grüße."""\n__livemod__ = {"name": "l", '
                     '"author": "Zoë"}\n'.encode("latin-1"))
    info = read_manifest(path)
    assert (info.description, info.author) == ("Grüße.", "Zoë")


def test_utf8_bom(tmp_path: Path) -> None:
    path = tmp_path / "bom.py"
    path.write_bytes(b'\xef\xbb\xbf__livemod__ = {"name": "b"}\n')
    assert read_manifest(path).name == "b"


def test_not_utf8_without_cookie(tmp_path: Path) -> None:
    path = tmp_path / "bad.py"
    path.write_bytes(b'__livemod__ = {"name": "x"}\n# caf\xe9\n')
    with pytest.raises(ManifestError) as info:
        read_manifest(path)
    err = info.value
    assert (err.path, err.line, err.field) == (str(path), 2, None)
    assert "utf-8" in str(err) and "coding" in str(err)


def test_unknown_coding_cookie(tmp_path: Path) -> None:
    path = tmp_path / "bad.py"
    path.write_bytes(b'# coding: no-such-codec\n__livemod__ = {"name": "x"}\n')
    with pytest.raises(ManifestError, match="coding"):
        read_manifest(path)


def test_null_bytes(tmp_path: Path) -> None:
    path = tmp_path / "nul.py"
    path.write_bytes(b'__livemod__ = {"name": "x"}\n\x00\n')
    with pytest.raises(ManifestError, match="cannot be parsed"):
        read_manifest(path)


# -- locating -----------------------------------------------------------------------------------


def test_nonexistent_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.py"
    with pytest.raises(ModuleNotFound, match=r"nope\.py"):
        read_manifest(missing)


def test_directory_without_init(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    with pytest.raises(ManifestError, match=r"__init__\.py") as info:
        locate(tmp_path / "pkg")
    assert info.value.path == str(tmp_path / "pkg")


def test_not_a_py_file(tmp_path: Path) -> None:
    path = tmp_path / "mod.txt"
    path.write_text('__livemod__ = {"name": "x"}\n')
    with pytest.raises(ManifestError, match=r"\.py"):
        locate(path)


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symlinks")
def test_symlinks(tmp_path: Path) -> None:
    target = write(tmp_path, '__livemod__ = {"name": "t"}\n', "target.py")
    link = tmp_path / "link.py"
    link.symlink_to(target)
    # The given path is kept: the operator named the link.
    assert locate(link) == (str(link), str(link), False)
    loop = tmp_path / "loop.py"
    loop.symlink_to(tmp_path / "loop2.py")
    (tmp_path / "loop2.py").symlink_to(loop)
    with pytest.raises(ManifestError, match="loop"):
        locate(loop)
    dangling = tmp_path / "dangling.py"
    dangling.symlink_to(tmp_path / "gone.py")
    with pytest.raises(ModuleNotFound):
        locate(dangling)


# -- manifest errors ----------------------------------------------------------------------------

ERROR_CASES = [
    pytest.param('x = (\n', 1, None, ["cannot be parsed"], id="syntax"),
    pytest.param('"""Doc."""\nx = 1\n', None, None, ["has no __livemod__", "top level"],
                 id="absent"),
    pytest.param('__livemod__ = {"name": "a"}\n\n__livemod__ = {"name": "b"}\n', 3, None,
                 ["more than once", "line 1"], id="twice"),
    pytest.param('__livemod__ = {"name": "a"}\nif x:\n    __livemod__ = {}\n', 3, None,
                 ["more than once"], id="twice-nested"),
    pytest.param('__livemod__ = {"name": "a"}\n__livemod__ |= {"version": "2"}\n', 2, None,
                 ["more than once"], id="augmented"),
    pytest.param('__livemod__ = {"name": "a"}\n__livemod__["version"] = "2"\n', 2, None,
                 ["modified"], id="subscript-write"),
    pytest.param('if True:\n    __livemod__ = {"name": "a"}\n', 2, None, ["top level"],
                 id="not-top-level"),
    pytest.param('__livemod__ = dict(name="a")\n', 1, None, ["dict display"], id="call"),
    pytest.param('__livemod__ = ["name"]\n', 1, None, ["dict display"], id="list"),
    pytest.param('a, __livemod__ = 1, {"name": "a"}\n', 1, None, ["directly"], id="unpack"),
    pytest.param('__livemod__ = {"name": "a", **extra}\n', 1, None, ["literal"], id="splat"),
    pytest.param('__livemod__ = {"name": "a", "name": "b"}\n', 1, "name", ["twice"],
                 id="dup-key"),
    pytest.param('__livemod__ = {\n  "name": NAME,\n}\n', 2, "name",
                 ["must be a literal (no names, calls or expressions)"], id="name-not-literal"),
    pytest.param('__livemod__ = {"name": "a",\n "depends": ["x", f()]}\n', 2, "depends",
                 ["must be a literal"], id="call-in-list"),
    pytest.param('__livemod__ = {"name": "a",\n "verison": "1"}\n', 2, "verison",
                 ["unknown key", "did you mean 'version'", "allowed: name, version"],
                 id="unknown-key"),
    pytest.param('__livemod__ = {"version": "1"}\n', 1, "name", ["required"], id="no-name"),
    pytest.param('__livemod__ = {"name": 3}\n', 1, "name", ["expected a str", "int"],
                 id="name-type"),
    pytest.param('__livemod__ = {"name": "my-mod"}\n', 1, "name", ["identifier", "'my-mod'"],
                 id="name-ident"),
    pytest.param('__livemod__ = {"name": "class"}\n', 1, "name", ["identifier"],
                 id="name-keyword"),
    pytest.param('__livemod__ = {"name": "a",\n "version": "one"}\n', 2, "version",
                 ["invalid version 'one'"], id="version"),
    pytest.param('__livemod__ = {"name": "a",\n "version": 1.2}\n', 2, "version",
                 ["expected a str", "float"], id="version-type"),
    pytest.param('__livemod__ = {"name": "a", "license": ["MIT"]}\n', 1, "license",
                 ["expected a str"], id="license-type"),
    pytest.param('__livemod__ = {"name": "a", "author": None}\n', 1, "author",
                 ["expected a str"], id="author-type"),
    pytest.param('__livemod__ = {"name": "a", "depends": "log"}\n', 1, "depends",
                 ["expected a list of str"], id="depends-type"),
    pytest.param('__livemod__ = {"name": "a", "depends": ["log",\n 3]}\n', 2, "depends",
                 ["expected a list of str"], id="depends-item-type"),
    pytest.param('__livemod__ = {"name": "a",\n "depends": ["a>=1"]}\n', 2, "depends",
                 ["names this module itself"], id="depends-self"),
    pytest.param('__livemod__ = {"name": "a", "aliases": ["b"],\n "depends": ["b"]}\n', 2,
                 "depends", ["itself"], id="depends-self-alias"),
    pytest.param('__livemod__ = {"name": "a", "depends": ["log",\n "log>=2"]}\n', 2,
                 "depends", ["duplicate dependency 'log'"], id="depends-dup"),
    pytest.param('__livemod__ = {"name": "a", "depends": ["log =>1"]}\n', 1, "depends",
                 ["invalid requirement", "'=>1'"], id="depends-syntax"),
    pytest.param('__livemod__ = {"name": "a", "aliases": ["ok",\n "bad alias"]}\n', 2,
                 "aliases", ["invalid alias"], id="alias-bad"),
    pytest.param('__livemod__ = {"name": "a", "aliases": ["b",\n "b"]}\n', 2, "aliases",
                 ["duplicate alias 'b'"], id="alias-dup"),
    pytest.param('__livemod__ = {"name": "a", "aliases": ["a"]}\n', 1, "aliases",
                 ["duplicate alias", "own name"], id="alias-self"),
    pytest.param('__livemod__ = {"name": "a", "params": ["x"]}\n', 1, "params",
                 ["expected a dict"], id="params-type"),
    pytest.param('__livemod__ = {"name": "a", "params": {\n "bad-name": {"type": "str"}}}\n', 2,
                 "params.bad-name", ["identifiers"], id="param-name"),
    pytest.param('__livemod__ = {"name": "a", "params": {"p": "str"}}\n', 1, "params.p",
                 ["expected a dict"], id="param-spec-type"),
    pytest.param('__livemod__ = {"name": "a", "params": {"p": {}}}\n', 1, "params.p.type",
                 ["required"], id="param-no-type"),
    pytest.param('__livemod__ = {"name": "greet", "params": {\n'
                 '  "greeting": {\n'
                 '    "type": "string"}}}\n', 3, "params.greeting.type",
                 ["expected one of str, int, float, bool, list, got 'string'"],
                 id="param-bad-type"),
    pytest.param('__livemod__ = {"name": "a", "params": {"p": {"type": "str",\n "defualt": ""}}}\n',
                 2, "params.p.defualt", ["unknown parameter key", "did you mean 'default'"],
                 id="param-unknown-key"),
    pytest.param('__livemod__ = {"name": "a", "params": {"p": {"type": "int",\n'
                 ' "default": True}}}\n',
                 2, "params.p.default", ["expected a default of type int", "bool"],
                 id="bool-for-int"),
    pytest.param('__livemod__ = {"name": "a", "params": {"p": {"type": "int", "default": 1.5}}}\n',
                 1, "params.p.default", ["expected a default of type int"], id="float-for-int"),
    pytest.param('__livemod__ = {"name": "a", "params": {"p": {"type": "float",\n'
                 ' "default": "1"}}}\n', 2, "params.p.default",
                 ["expected a default of type float"], id="str-for-float"),
    pytest.param('__livemod__ = {"name": "a", "params": {"p": {"type": "str", "default": 1}}}\n',
                 1, "params.p.default", ["expected a default of type str"], id="int-for-str"),
    pytest.param('__livemod__ = {"name": "a", "params": {"p": {"type": "bool", "default": 1}}}\n',
                 1, "params.p.default", ["expected a default of type bool"], id="int-for-bool"),
    pytest.param('__livemod__ = {"name": "a", "params": {"p": {"type": "list",\n'
                 ' "default": [[1]]}}}\n', 2, "params.p.default", ["items must be"],
                 id="nested-list"),
    pytest.param('__livemod__ = {"name": "a", "params": {"p": {"type": "str",\n'
                 ' "writable": "yes"}}}\n', 2, "params.p.writable", ["True or False"],
                 id="writable-type"),
    pytest.param('__livemod__ = {"name": "a", "params": {"p": {"type": "str", "doc": 1}}}\n',
                 1, "params.p.doc", ["expected a str"], id="doc-type"),
    pytest.param('__livemod__ = {"name": "a", "params": {"p": {"type": "str", "default": x}}}\n',
                 1, "params.p.default", ["must be a literal"], id="default-not-literal"),
]


@pytest.mark.parametrize(("source", "line", "field", "words"), ERROR_CASES)
def test_manifest_errors(
    tmp_path: Path, source: str, line: int | None, field: str | None, words: list[str]
) -> None:
    err = manifest_error(tmp_path, source)
    assert (err.line, err.field) == (line, field)
    message = str(err)
    for word in words:
        assert word in message
    if line is not None:
        assert f"mod.py:{line}:" in message
    if field is not None:
        assert f"__livemod__ field {field!r}" in message
        assert message.endswith("(fix the manifest)")


def test_error_names_module_once_known(tmp_path: Path) -> None:
    err = manifest_error(tmp_path, '__livemod__ = {"name": "greet", "version": "x"}\n')
    assert err.module == "greet"
    err = manifest_error(tmp_path, '__livemod__ = {"name": "bad name"}\n')
    assert err.module is None


def test_exact_message_format(tmp_path: Path) -> None:
    path = write(tmp_path, '"""Hi."""\n__livemod__ = {\n "name": "greet", "params": {\n'
                           ' "greeting": {"type": "string"}}}\n', "greet.py")
    with pytest.raises(ManifestError) as info:
        read_manifest(path)
    assert str(info.value) == (
        f"{path}:4: __livemod__ field 'params.greeting.type': expected one of str, int, "
        "float, bool, list, got 'string' (fix the manifest)"
    )


# -- versions and requirements ------------------------------------------------------------------

ORDERED = ["0", "0.9", "1.0.dev1", "1.0a1", "1.0a2", "1.0b1", "1.0rc1", "1.0", "1.0+abc",
           "1.0.post1", "1.1", "1.9", "1.10", "2.0.0"]


def test_version_ordering() -> None:
    keys = [parse_version(v) for v in ORDERED]
    assert keys == sorted(keys)
    assert len(set(keys)) == len(keys)
    assert parse_version("1.2") == parse_version("1.2.0") == parse_version("1.2.0.0")
    assert parse_version("1.10") > parse_version("1.9")
    assert parse_version("1.0rc1") < parse_version("1.0")
    assert parse_version("1.0.dev1") < parse_version("1.0a1")
    assert parse_version("1.0RC1") == parse_version("1.0rc1")


@pytest.mark.parametrize("bad", ["", "one", "1..2", "v1.0", "1.0-", "1.0+", "1.0 beta", ".1"])
def test_bad_versions(bad: str) -> None:
    with pytest.raises(ValueError, match="invalid version"):
        parse_version(bad)


@pytest.mark.parametrize(
    ("text", "version", "ok"),
    [
        ("log", "0.1", True),
        ("log>=1.2,<2", "1.2.0", True),
        ("log>=1.2,<2", "1.9.9", True),
        ("log>=1.2,<2", "2.0", False),
        ("log>=1.2,<2", "1.1", False),
        ("log==1.2", "1.2.0", True),
        ("log==1.2", "1.2+local", True),
        ("log!=1.2", "1.2.0", False),
        ("log>1.2", "1.2", False),
        ("log<=1.2", "1.2", True),
        ("log~=1.2", "1.9", True),
        ("log~=1.2", "2.0", False),
        ("log~=1.2", "1.1", False),
        ("log~=1.2.3", "1.2.9", True),
        ("log~=1.2.3", "1.3", False),
        ("log==1.*", "1.7.3", True),
        ("log==1.*", "2.0", False),
        ("log!=1.*", "2.0", True),
        ("log==1.2.*", "1.2", True),
        ("log>=1.0", "1.0rc1", False),
    ],
)
def test_requirement_matching(text: str, version: str, ok: bool) -> None:
    assert Requirement.parse(text).satisfied_by(version) is ok


def test_requirement_parse_and_str() -> None:
    req = Requirement.parse("  my.log-x  >= 1.2 ,  < 2 ")
    assert (req.name, req.spec, str(req)) == ("my.log-x", ">=1.2,<2", "my.log-x>=1.2,<2")
    assert Requirement.parse("log") == Requirement("log", "")
    with pytest.raises(ValueError, match="invalid version"):
        Requirement.parse("log").satisfied_by("nope")


@pytest.mark.parametrize("bad", ["", ">=1", "log>=", "log 1.2", "log>=1,", "log>=x",
                                 "log~=1", "log>=1.*", "log=1"])
def test_bad_requirements(bad: str) -> None:
    with pytest.raises(ValueError, match="requirement"):
        Requirement.parse(bad)


# -- robustness ---------------------------------------------------------------------------------


def _parse(source: bytes) -> None:
    with contextlib.suppress(ManifestError):
        parse_manifest(source, path="/x/m.py", source_file="/x/m.py", is_package=False)


@settings(max_examples=FUZZ_EXAMPLES, deadline=None)
@given(st.text())
def test_arbitrary_text_only_raises_manifest_error(text: str) -> None:
    _parse(text.encode("utf-8", "surrogatepass"))
    _parse(('__livemod__ = {"name": "m", ' + text + "}\n").encode("utf-8", "surrogatepass"))


@settings(max_examples=FUZZ_EXAMPLES, deadline=None)
@given(st.binary())
def test_arbitrary_bytes_only_raise_manifest_error(data: bytes) -> None:
    _parse(data)
    _parse(b'__livemod__ = {"name": "m", "params": ' + data + b"}\n")


@settings(max_examples=FUZZ_EXAMPLES, deadline=None)
@given(st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=10,
))
def test_arbitrary_literal_values(value: object) -> None:
    for key in ("name", "version", "depends", "aliases", "params", "license"):
        _parse(f"__livemod__ = {{'name': 'm', {key!r}: {value!r}}}\n".encode())


def test_path_through_a_file_is_not_found(tmp_path: Path) -> None:
    blocker = write(tmp_path, "x = 1\n", "file.py")
    with pytest.raises(ModuleNotFound):
        locate(blocker / "inner.py")


def test_a_name_python_would_read_as_another_is_refused(tmp_path: Path) -> None:
    # U+FF47 is a fullwidth g: Python reads the identifier as 'greet' (NFKC).
    err = manifest_error(tmp_path, '__livemod__ = {"name": "\\uff47reet"}\n')
    assert err.field == "name"
    assert "'greet'" in str(err) and "NFKC" in str(err)


def test_a_name_already_in_nfkc_form_is_kept(tmp_path: Path) -> None:
    info = read_manifest(write(tmp_path, '__livemod__ = {"name": "gr\\u00fc\\u00dfe"}\n'))
    assert info.name == "gr\u00fc\u00dfe"


@pytest.mark.parametrize(("field", "entries", "limit"), [
    ("aliases", [f'"a{i}"' for i in range(300)], "aliases = 256"),
    ("depends", [f'"d{i}>=1"' for i in range(1100)], "depends = 1024"),
])
def test_entry_counts_over_the_limit_are_refused(
    tmp_path: Path, field: str, entries: list[str], limit: str
) -> None:
    listed = ",\n    ".join(entries)
    text = f'__livemod__ = {{"name": "m", "{field}": [\n    {listed}\n]}}\n'
    err = manifest_error(tmp_path, text)
    assert f"over the limit {limit}" in str(err) and err.field == field


def test_a_manifest_over_the_size_limit_is_refused_without_reading_it_all(
    tmp_path: Path,
) -> None:
    big = "x" * 100_000
    err = manifest_error(tmp_path, f'__livemod__ = {{"name": "m",\n "description": "{big}"}}\n')
    assert "over the limit manifest_bytes = 65536" in str(err)


def test_a_closing_brace_before_a_comment_ends_the_manifest(tmp_path: Path) -> None:
    text = '__livemod__ = {"name": "m",\n  "version": "1.0"}  # the end\n' + "x = 1\n" * 20_000
    assert read_manifest(write(tmp_path, text)).version == "1.0"
