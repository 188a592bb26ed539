"""The bad-input corpus: broken modules and manifests, each refused with its own error, and
the host exactly as before after every one of them.

The files live in ``tests/fixtures/bad/``; the cases that must not be committed (a 50 MB
file, symbolic link loops, a dangling link) are made in a temporary folder at test time.
``CASES`` below is the table: how each case is loaded, the error class it must raise and a
fragment of the message. Every case is checked against a fresh host with a module (``basic``)
already loaded, then all of them in turn against one host; the host must be unchanged
(lsmod, the host's private ``sys.modules`` names, every hook's implementations, taints) and
``basic`` must still answer its hook. A Hypothesis fuzz test at the end feeds generated
module files (valid manifest, random body) through ``insmod``.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import livemod

pytestmark = pytest.mark.usefixtures("no_stray_threads")

FIXTURES = Path(__file__).parent / "fixtures"
BAD = FIXTURES / "bad"
BASIC = FIXTURES / "modules" / "basic.py"
FUZZ_EXAMPLES = int(os.environ.get("LIVEMOD_FUZZ_EXAMPLES", "200"))


# -- cases made at test time (never committed) ------------------------------------------------


def _huge(tmp: Path) -> str:
    """A 50 MB module file: over the 16 MiB per-file limit."""
    target = tmp / "huge.py"
    with open(target, "wb") as f:
        f.write(b'__livemod__ = {"name": "huge"}\n')
        f.write(b"# padding padding padding padding padding padding padding padding pad\n"
                * (50 * 2**20 // 70))
    assert target.stat().st_size >= 50 * 10**6
    return str(target)


def _link_loop_in_package(tmp: Path) -> str:
    """A package holding a symbolic link loop (a.py -> b.py -> a.py)."""
    pkg = tmp / "looppkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text('__livemod__ = {"name": "looppkg"}\n')
    os.symlink("b.py", pkg / "a.py")
    os.symlink("a.py", pkg / "b.py")
    return str(pkg)


def _link_loop_module(tmp: Path) -> str:
    """The module path itself is a link to itself."""
    target = tmp / "selfloop.py"
    os.symlink("selfloop.py", target)
    return str(target)


def _dangling_in_package(tmp: Path) -> str:
    pkg = tmp / "danglepkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text('__livemod__ = {"name": "danglepkg"}\n')
    os.symlink("nowhere.py", pkg / "gone.py")
    return str(pkg)


def _missing(tmp: Path) -> str:
    return str(tmp / "no_such_module.py")


GENERATED: dict[str, Callable[[Path], str]] = {
    "@huge": _huge,
    "@link_loop_in_package": _link_loop_in_package,
    "@link_loop_module": _link_loop_module,
    "@dangling_in_package": _dangling_in_package,
    "@missing": _missing,
}


@dataclass(frozen=True)
class Case:
    """One corpus entry: ``how`` is ``insmod`` (``target`` a path under bad/, or a
    ``@generated`` one) or ``modprobe`` (``target`` a name; the modpath is bad/)."""

    target: str
    error: type[BaseException]
    fragment: str
    how: str = "insmod"
    params: dict[str, object] = field(default_factory=dict)
    #: What the message must name (the file or the module); default: target's stem.
    names: str | None = None
    #: A known bug: the case is expected to fail (strict xfail) until it is fixed.
    bug: str | None = None

    @property
    def id(self) -> str:
        extra = ",".join(f"{k}={v}" for k, v in self.params.items())
        return f"{self.how}:{self.target}" + (f"[{extra}]" if extra else "")


ME = livemod.ManifestError
IE = livemod.InitError
DE = livemod.DependencyError
PE = livemod.ParamError
EX = livemod.ModuleExists
NF = livemod.ModuleNotFound

CASES: list[Case] = [
    # Source that is not Python, or not decodable.
    Case("syntax_body.py", ME, "cannot be parsed as Python: expected ':'"),
    Case("syntax_pkg", IE, "failed to load at broken_sub.py:2", names="syntax_pkg"),
    Case("nullbytes.py", ME, "null bytes"),
    Case("latin1.py", ME, "cannot be decoded"),
    Case("bad_cookie.py", ME, "unknown encoding: klingon"),
    Case("bom_and_cookie.py", ME, "cannot be decoded"),
    Case("pkg_latin1_sub", IE, "failed to load at legacy.py:1", names="pkg_latin1_sub"),
    Case("deep_nesting.py", ME, "too many nested parentheses"),
    # ast.parse accepts these; only compile() refuses them.
    Case("yield_outside.py", ME, "cannot be compiled: 'yield' outside function"),
    Case("return_outside.py", ME, "cannot be compiled: 'return' outside function"),
    Case("nonlocal_toplevel.py", ME, "cannot be compiled: nonlocal declaration not allowed"),
    Case("not_python.txt", ME, "is not a .py file or a package directory"),
    Case("pkg_no_init", ME, "directory without __init__.py"),
    Case("@missing", NF, "the path does not exist", names="no_such_module"),
    Case("@huge", ME, "larger than a module file may be", names="huge.py"),
    Case("@link_loop_in_package", ME, "symbolic link loop", names="a.py"),
    Case("@link_loop_module", ME, "symbolic link loop", names="selfloop.py"),
    Case("@dangling_in_package", ME, "cannot be read", names="gone.py"),
    # No manifest, or one in the wrong place or shape.
    Case("empty.py", ME, "has no __livemod__ manifest"),
    Case("docstring_only.py", ME, "has no __livemod__ manifest"),
    Case("no_manifest.py", ME, "has no __livemod__ manifest"),
    Case("manifest_twice.py", ME, "assigned more than once (first at line 1)"),
    Case("manifest_in_if.py", ME, "directly at module top level"),
    Case("manifest_modified.py", ME, "modified after it is assigned"),
    Case("manifest_not_dict.py", ME, "must be a dict display"),
    # Non-literal values.
    Case("nonliteral_name.py", ME, "field 'name': must be a literal"),
    Case("nonliteral_call.py", ME, "field 'version': must be a literal"),
    Case("nonliteral_fstring.py", ME, "field 'version': must be a literal"),
    Case("nonliteral_comprehension.py", ME, "field 'depends': must be a literal"),
    Case("nonliteral_binop.py", ME, "field 'version': must be a literal"),
    Case("nonliteral_spread.py", ME, "must be a literal"),
    # Unknown keys, wrong types, bad values.
    Case("unknown_key.py", ME, "'verison': unknown key"),
    Case("unknown_param_key.py", ME, "'params.n.dflt': unknown parameter key"),
    Case("duplicate_key.py", ME, "field 'name': appears twice"),
    Case("missing_name.py", ME, "field 'name': is required"),
    Case("wrong_type_name.py", ME, "field 'name': expected a str, got int"),
    Case("nonidentifier_name.py", ME, "must be a valid Python identifier, got 'my-module'"),
    Case("keyword_name.py", ME, "must be a valid Python identifier, got 'class'"),
    Case("wrong_type_version.py", ME, "field 'version': expected a str, got float"),
    Case("bad_version.py", ME, "invalid version 'one point oh'"),
    Case("wrong_type_description.py", ME, "field 'description': expected a str, got bytes"),
    Case("wrong_type_license.py", ME, "field 'license': expected a str, got list"),
    Case("wrong_type_author.py", ME, "field 'author': expected a str, got NoneType"),
    Case("wrong_type_depends.py", ME, "field 'depends': expected a list of str, got str"),
    Case("bad_requirement.py", ME, "invalid requirement 'log >> 1'"),
    Case("depends_on_itself.py", ME, "names this module itself"),
    Case("wrong_type_aliases.py", ME, "field 'aliases': expected a list of str, got an item"),
    Case("alias_is_own_name.py", ME, "it is the module's own name"),
    Case("wrong_type_params.py", ME, "field 'params': expected a dict, got list"),
    Case("bad_param_name.py", ME, "'params.2fast': parameter names must be valid"),
    Case("wrong_type_param_type.py", ME, "'params.n.type': expected one of"),
    Case("wrong_type_default.py", ME, "'params.n.default': expected a default of type int"),
    Case("wrong_type_writable.py", ME, "'params.n.writable': expected True or False"),
    Case("wrong_type_doc.py", ME, "'params.n.doc': expected a str, got int"),
    Case("pkg_bad_manifest", ME, "expected a list of str, got an item 3"),
    # Names that clash, or that differ from the one asked for.
    Case("clash_name.py", EX, "'basic' is already taken by module 'basic'"),
    Case("clash_alias.py", EX, "'basic-alias' is already taken by module 'basic'"),
    Case("basic", EX, "already loaded", how="modprobe", params={"tag": "other"}),
    Case("wrongname", ME, "declares the name 'rightname', not 'wrongname'", how="modprobe"),
    Case("nonliteral_name", ME, "field 'name': must be a literal", how="modprobe"),
    Case("nowhere_at_all", NF, "no module or alias 'nowhere_at_all'", how="modprobe"),
    # Dependencies.
    Case("cyc_a", DE, "dependency cycle cyc_a -> cyc_b -> cyc_a", how="modprobe"),
    Case("cyc3_a", DE, "dependency cycle cyc3_a -> cyc3_b -> cyc3_c -> cyc3_a",
         how="modprobe"),
    Case("needs_ghost", DE, "'ghost_module' was not found on the modpath", how="modprobe"),
    Case("needs_ghost.py", DE, "depends on 'ghost_module', which is not loaded"),
    Case("conf_top", DE, "conf_top -> conf_right needs conf_base<2", how="modprobe"),
    Case("needs_basic_v2", DE, "basic 1.0.0 is loaded", how="modprobe"),
    Case("needs_basic_v2.py", DE, "it needs basic>=2, but basic 1.0.0 is loaded"),
    Case("chain_top", IE, "chain_top: planned failure", how="modprobe"),
    # Parameters.
    Case("params_mod.py", PE, "parameter 'count' expects int, got 'abc'",
         params={"count": "abc"}, names="params_mod"),
    Case("params_mod.py", PE, "parameter 'verbose' expects bool", params={"verbose": "maybe"},
         names="params_mod"),
    Case("params_mod.py", PE, "has no parameter 'bogus'", params={"bogus": "1"},
         names="params_mod"),
    Case("params_mod.py", PE, "did you mean 'count'?", params={"cuont": 2},
         names="params_mod"),
    Case("required_param.py", PE, "required parameter 'port' not given"),
    # Code that fails when it runs: body, init, imports.
    Case("body_raises.py", IE, "at body_raises.py:6 in <module>: LookupError"),
    Case("init_raises.py", IE, "at init_raises.py:11 in init: ValueError"),
    Case("init_sys_exit.py", IE, "SystemExit: 3"),
    Case("init_base_exception.py", IE, "Meltdown: init_base_exception: custom BaseException"),
    Case("init_keyboard_interrupt.py", KeyboardInterrupt, ""),
    Case("async_init_no_loop.py", IE, "is a coroutine, and this host has no running event loop"),
    Case("import_missing_mod.py", IE, "cannot import 'nowhere_module'"),
    Case("relative_import.py", IE, "ModuleNotFoundError"),
    Case("pkg_missing_sub", IE, "cannot import name 'not_there'"),
]


def private_names(host: livemod.Host) -> set[str]:
    prefix = f"livemod.mods.{host._tag}."
    return {n for n in sys.modules if n.startswith(prefix)}


def snapshot(host: livemod.Host, *, taints: bool = True) -> dict[str, Any]:
    """Everything about the host that a failed load must leave as it was."""
    rows = [(r.name, r.version, r.state, r.holds, r.pins, r.used_by, r.uses, r.path,
             dict(r.params), r.errors) for r in host.lsmod()]
    hooks = {name: hook.implementations() for name, hook in list(host._hooks.hooks.items())
             if len(hook)}
    stats = host.statistics()
    return {
        "lsmod": rows, "private": private_names(host), "hooks": hooks,
        "taints": host.tainted if taints else None,
        "table": (sorted(host._table.names), sorted(host._table.aliases),
                  sorted(host._table.incoming)),
        "counts": (stats.modules, stats.live, stats.loads - stats.unloads),
    }


def answers(host: livemod.Host) -> None:
    assert host.hook("basic.ping")("still") == [("pong", "still")]
    with host.hold("basic") as basic:
        assert basic.ping(1) == ("pong", 1)


def target_of(case: Case, tmp: Path) -> str:
    if case.target.startswith("@"):
        return GENERATED[case.target](tmp)
    return str(BAD / case.target)


def load(host: livemod.Host, case: Case, tmp: Path) -> None:
    if case.how == "modprobe":
        host.modprobe(case.target, **case.params)
    else:
        host.insmod(target_of(case, tmp), **case.params)


def check_case(host: livemod.Host, case: Case, tmp: Path) -> None:
    before = snapshot(host)
    with pytest.raises(case.error) as caught:
        load(host, case, tmp)
    exc = caught.value
    assert type(exc) is case.error, (type(exc), exc)
    message = str(exc)
    assert case.fragment in message, message
    if isinstance(exc, livemod.LivemodError):
        named = case.names or Path(case.target.lstrip("@")).stem
        assert named in message, f"{named!r} not named in: {message}"
        if isinstance(exc, livemod.InitError):
            assert exc.__cause__ is not None
    assert snapshot(host) == before
    answers(host)


@pytest.fixture
def loaded_host(probe: Any) -> Iterator[livemod.Host]:
    host = livemod.Host(modpath=[BAD], timeout=2.0)
    host.insmod(BASIC)
    try:
        yield host
    finally:
        host.close(timeout=2.0)


def test_the_corpus_is_large_enough() -> None:
    assert len(CASES) >= 40
    assert len({c.id for c in CASES}) == len(CASES)
    for case in CASES:
        if case.how == "insmod" and not case.target.startswith("@"):
            assert (BAD / case.target).exists(), case.target


@pytest.mark.parametrize("case", [
    pytest.param(c, id=c.id, marks=[pytest.mark.xfail(strict=True, reason=c.bug)] if c.bug else [])
    for c in CASES
])
def test_bad_input_is_refused_and_the_host_is_unchanged(
    loaded_host: livemod.Host, case: Case, tmp_path: Path
) -> None:
    check_case(loaded_host, case, tmp_path)
    # The host still loads and unloads a good module afterwards.
    m = loaded_host.insmod(BAD / "params_mod.py", count="7")
    assert loaded_host.hook("params_mod.h")() == [7]
    loaded_host.rmmod(m.name)


def test_one_host_survives_the_whole_corpus(loaded_host: livemod.Host, tmp_path: Path) -> None:
    for n, case in enumerate(c for c in CASES if c.bug is None):
        folder = tmp_path / str(n)
        folder.mkdir()
        check_case(loaded_host, case, folder)
    assert loaded_host.tainted == ()
    loaded_host.rmmod("basic")
    assert loaded_host.lsmod() == [] and private_names(loaded_host) == set()


def test_a_version_conflict_is_found_before_any_body_runs(
    loaded_host: livemod.Host, probe: Any
) -> None:
    with pytest.raises(livemod.DependencyError):
        loaded_host.modprobe("conf_top")
    assert probe.seen("bad") == []


def test_modprobe_unloads_the_dependency_it_loaded_when_the_module_fails(
    loaded_host: livemod.Host, probe: Any
) -> None:
    with pytest.raises(livemod.InitError):
        loaded_host.modprobe("chain_top")
    assert probe.seen("bad") == [("bad", "chain_dep init"), ("bad", "chain_dep exit")]
    assert loaded_host.hook("chain_dep.h")() == []


def test_a_link_to_a_folder_inside_a_package_does_not_trap_the_walk(
    loaded_host: livemod.Host, tmp_path: Path
) -> None:
    pkg = tmp_path / "walkpkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text('__livemod__ = {"name": "walkpkg"}\nfrom . import part\n')
    (pkg / "part.py").write_text("VALUE = 1\n")
    os.symlink(".", pkg / "sub" / "again")  # sub/again/again/... forever, if followed
    os.symlink("..", pkg / "up")
    m = loaded_host.insmod(pkg)
    assert m.state is livemod.State.LIVE
    loaded_host.rmmod("walkpkg")


# -- fuzzing: generated module files through insmod -------------------------------------------

#: Pieces of module body. None of them may hang or leave the process changed; KeyboardInterrupt
#: is left out on purpose (it is the one BaseException that propagates, by design).
_SNIPPETS = [
    "x = 1",
    "raise ValueError('fuzz')",
    "raise SystemExit(2)",
    "class Boom(BaseException):\n    pass\nraise Boom('fuzz')",
    "def init(mod):\n    mod.hook('fuzz.h').add(lambda: 'fuzz')",
    "def init(mod):\n    mod.hook('basic.ping').add(lambda x=None: 'fuzz')\n"
    "    raise RuntimeError('after a registration')",
    "def init(mod):\n    mod.export('a', 1)\n    mod.export('a', 2)",
    "def init(mod):\n    mod.require('basic')",
    "def init(mod):\n    mod.require('nowhere')",
    "def init(mod):\n    return 5",
    "def init(mod):\n    mod.on_exit(lambda: None)\n    mod.hook('basic.ping').add(print)",
    "def init(mod):\n    mod.params.nope",
    "def init(mod):\n    import sys\n    sys.exit('bye')",
    "init = 3",
    "exit = None",
    "from livemod.mods.basic import ping",
    "from livemod.mods.nowhere import x",
    "import livemod.mods.basic",
    "import livemod.mods",
    "from . import basic",
    "from .. import anything",
    "import this_module_does_not_exist_anywhere",
    "import sys\nsys.modules.pop(__name__, None)",
    "__livemod__ = {'name': 'other'}",
    "__livemod__['version'] = '2'",
    "def f(:",
    "\tx = 1",
    "if True:\nx = 2",
    "'unterminated",
    "yield 1",
    "return 1",
    "await x",
    "nonlocal x",
    "global x",
    "del undefined_name",
    "assert False, 'fuzz'",
    "1 / 0",
    "[][1]",
    "import atexit\natexit.register(print)",
]

_headers = st.sampled_from([
    '__livemod__ = {"name": "fuzzmod"}\n',
    '__livemod__ = {"name": "fuzzmod", "version": "1.0", "depends": ["basic"]}\n',
    '__livemod__ = {"name": "fuzzmod", "params": {"n": {"type": "int", "default": 1}}}\n',
    '"""Doc."""\n__livemod__ = {"name": "fuzzmod", "aliases": ["fz"]}\n',
    '# -*- coding: latin-1 -*-\n__livemod__ = {"name": "fuzzmod"}\n',
])
_snippet = st.sampled_from(_SNIPPETS)
# Mostly code that compiles (so that bodies and inits run), some raw text that does not.
_lines = st.one_of(_snippet, _snippet, _snippet, st.text(max_size=40).map(repr),
                   st.text(max_size=40).map("# {}".format), st.text(max_size=40))
_bodies = st.lists(_lines, max_size=6).map("\n".join)


def test_fuzz_generated_module_files_only_raise_livemod_errors(
    loaded_host: livemod.Host, tmp_path: Path
) -> None:
    host = loaded_host
    target = tmp_path / "fuzzmod.py"
    before = snapshot(host, taints=False)
    outcomes: dict[str, int] = {}

    @settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(header=_headers, body=_bodies, raw=st.binary(max_size=30),
           params=st.dictionaries(st.sampled_from(["n", "m"]),
                                  st.one_of(st.text(max_size=4), st.integers()), max_size=2))
    def run(header: str, body: str, raw: bytes, params: dict[str, object]) -> None:
        data = header.encode() + body.encode("utf-8", "surrogatepass") + b"\n" + raw
        target.write_bytes(data)
        try:
            host.insmod(target, **params)
        except livemod.LivemodError as exc:
            outcomes[type(exc).__name__] = outcomes.get(type(exc).__name__, 0) + 1
            assert str(exc)
        else:
            outcomes["loaded"] = outcomes.get("loaded", 0) + 1
            host.rmmod("fuzzmod")
        assert snapshot(host, taints=False) == before
        assert all(t.flag in {"livemod-tampered", "exit-failed"} for t in host.tainted)
        assert threading.active_count() < 50

    run()
    answers(host)
    print(f"fuzzed {FUZZ_EXAMPLES} module files: {outcomes}")
