"""livemod.toml: every section parsed, every error naming file, line and key."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

import livemod
from livemod.config import Config, HostConfig, SoftDeps, load_config, parse_config

FULL = """\
# a comment
load = ["log", "greeter"]
blacklist = ["debugshell"]

[host]
name = "web-1"
modpath = ["modules", "/opt/livemod/modules", "~/mods"]
socket = "run/web-1.sock"
state_file = "state/web-1.json"
timeout = 2
errors = "isolate"
leak_check = false
signatures = "warn"
trusted_keys = "keys"
allow_users = ["deploy", 1001]
allow_groups = ["ops", 0]

[options.greet]
greeting = "hi"
count = 3
ratio = 0.5
loud = true
names = ["a", "b"]

[options.log]
level = "debug"

[aliases]
greeter = "greet"
"quoted-alias" = "log"

[softdeps.web]
pre = ["log", "greeter"]
post = ["metrics"]
"""


def error(text: str, path: str = "/etc/livemod/livemod.toml") -> livemod.ConfigError:
    with pytest.raises(livemod.ConfigError) as info:
        parse_config(text, path=path)
    exc = info.value
    assert exc.path == path
    assert str(exc).startswith(path)
    return exc


# ---------------------------------------------------------------------------- parsing


def test_full_file_parses_every_section(tmp_path: Path) -> None:
    (tmp_path / "livemod.toml").write_text(FULL)
    cfg = load_config(tmp_path / "livemod.toml")
    assert cfg.path == str(tmp_path / "livemod.toml")
    assert cfg.load == ("log", "greeter")
    assert cfg.blacklist == ("debugshell",)
    assert cfg.host == HostConfig(
        name="web-1",
        modpath=(str(tmp_path / "modules"), "/opt/livemod/modules",
                 os.path.expanduser("~/mods")),
        socket=str(tmp_path / "run" / "web-1.sock"),
        state_file=str(tmp_path / "state" / "web-1.json"),
        timeout=2.0, errors="isolate", leak_check=False, signatures="warn",
        trusted_keys=str(tmp_path / "keys"),
        allow_users=("deploy", 1001), allow_groups=("ops", 0),
    )
    assert isinstance(cfg.host.timeout, float)
    assert dict(cfg.options["greet"]) == {
        "greeting": "hi", "count": 3, "ratio": 0.5, "loud": True, "names": ("a", "b")}
    assert dict(cfg.options["log"]) == {"level": "debug"}
    assert dict(cfg.aliases) == {"greeter": "greet", "quoted-alias": "log"}
    # Softdeps are stored with aliases resolved.
    assert dict(cfg.softdeps) == {"web": SoftDeps(pre=("log", "greet"), post=("metrics",))}


def test_empty_file_is_all_defaults() -> None:
    cfg = parse_config("", path="livemod.toml")
    assert cfg == Config(path=os.path.abspath("livemod.toml"))
    assert cfg.host == HostConfig()
    assert cfg.host.timeout == 5.0 and cfg.host.errors == "raise" and cfg.host.leak_check
    assert cfg.host.signatures == "off"
    assert cfg.load == () and cfg.blacklist == () and not cfg.options and not cfg.aliases


def test_relative_paths_resolve_against_the_config_folder(tmp_path: Path) -> None:
    sub = tmp_path / "etc" / "app"
    sub.mkdir(parents=True)
    (sub / "livemod.toml").write_text(
        '[host]\nmodpath = ["mods", "../shared/mods", "."]\nstate_file = "s.json"\n')
    cwd = os.getcwd()
    os.chdir(tmp_path)  # the working directory must not matter
    try:
        cfg = load_config("etc/app/livemod.toml")
    finally:
        os.chdir(cwd)
    assert cfg.host.modpath == (str(sub / "mods"), str(tmp_path / "etc" / "shared" / "mods"),
                                str(sub))
    assert cfg.host.state_file == str(sub / "s.json")


def test_host_kwargs_build_a_real_host(tmp_path: Path) -> None:
    cfg = parse_config('[host]\nname = "h1"\nmodpath = ["m"]\ntimeout = 1.5\n'
                       'errors = "isolate"\nleak_check = false\n',
                       path=str(tmp_path / "livemod.toml"))
    with livemod.Host(**cfg.host.host_kwargs()) as host:
        assert host.name == "h1"
        assert host.modpath == [str(tmp_path / "m")]
        assert host.timeout == 1.5 and host.leak_check is False


def test_config_is_frozen() -> None:
    cfg = parse_config(FULL, path="livemod.toml")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.load = ()  # type: ignore[misc]
    with pytest.raises(TypeError):
        cfg.options["greet"]["greeting"] = "x"  # type: ignore[index]
    with pytest.raises(TypeError):
        cfg.aliases["x"] = "y"  # type: ignore[index]


# ---------------------------------------------------------------------------- helpers


def test_helpers_for_the_host() -> None:
    cfg = parse_config(FULL, path="livemod.toml")
    assert cfg.resolve("greeter") == "greet" and cfg.resolve("greet") == "greet"
    assert cfg.resolve("unknown") == "unknown"
    assert cfg.is_blacklisted("debugshell") and not cfg.is_blacklisted("greet")
    assert cfg.params_for("greeter") == dict(cfg.options["greet"])
    merged = cfg.params_for("greet", {"greeting": "yo", "extra": 1})
    assert merged["greeting"] == "yo" and merged["extra"] == 1 and merged["count"] == 3
    assert cfg.params_for("nothing") == {}
    assert cfg.softdeps_for("web") == SoftDeps(("log", "greet"), ("metrics",))
    assert cfg.softdeps_for("greet") == SoftDeps()


def test_modprobe_plan_resolves_alias_merges_params_and_lists_softdeps() -> None:
    cfg = parse_config(FULL + '[options.web]\nport = 80\n', path="livemod.toml")
    plan = cfg.modprobe_plan("greeter", {"count": 9})
    assert (plan.requested, plan.name) == ("greeter", "greet")
    assert dict(plan.params) == {"greeting": "hi", "count": 9, "ratio": 0.5, "loud": True,
                                 "names": ("a", "b")}
    web = cfg.modprobe_plan("web")
    assert (web.pre, web.post, dict(web.params)) == (("log", "greet"), ("metrics",),
                                                     {"port": 80})
    assert [p.name for p in cfg.load_plan()] == ["log", "greet"]


def test_modprobe_plan_refuses_blacklisted_names_and_aliases() -> None:
    cfg = parse_config('blacklist = ["greet"]\n[aliases]\ngreeter = "greet"\n',
                       path="livemod.toml")
    with pytest.raises(livemod.ModuleNotFound, match=r"blacklisted.*insmod it by path"):
        cfg.modprobe_plan("greet")
    with pytest.raises(livemod.ModuleNotFound, match=r"'greeter' \(an alias of 'greet'\)"):
        cfg.modprobe_plan("greeter")
    assert cfg.is_blacklisted("greeter")


# ---------------------------------------------------------------------------- errors


def test_config_error_is_part_of_the_hierarchy() -> None:
    assert issubclass(livemod.ConfigError, livemod.LivemodError)
    assert issubclass(livemod.ConfigError, ValueError)
    assert livemod.ConfigError.code == "config-error"
    assert "ConfigError" in livemod.__all__ and livemod.__all__ == sorted(livemod.__all__)
    assert "ManifestError" in (livemod.ConfigError.__doc__ or "")


@pytest.mark.parametrize(
    ("text", "line", "key", "fragment"),
    [
        # unknown sections and keys, with the closest suggestion
        ("[hots]\nname = 'x'\n", 1, "hots", "did you mean 'host'?"),
        ("[host]\nname = 'x'\ntimout = 3\n", 3, "host.timout", "did you mean 'timeout'?"),
        ("[softdeps.web]\npree = ['a']\n", 2, "softdeps.web.pree", "did you mean 'pre'?"),
        ("loads = ['a']\n", 1, "loads", "did you mean 'load'?"),
        # top-level lists written under a table
        ("[host]\nname = 'x'\nload = ['a']\n", 3, "host.load", "move it above the first"),
        ("[aliases]\na = 'b'\nblacklist = ['c']\n", 3, "aliases.blacklist", "top level"),
        # wrong types and bad values in [host]
        ("host = 3\n", 1, "host", "must be a table"),
        ("[host]\nname = 3\n", 2, "host.name", "non-empty string"),
        ("[host]\nname = ''\n", 2, "host.name", "non-empty string"),
        ("[host]\nmodpath = 'mods'\n", 2, "host.modpath", "must be a list"),
        ("[host]\nmodpath = ['a', 1]\n", 2, "host.modpath", "got an integer 1"),
        ("[host]\nsocket = 5\n", 2, "host.socket", "non-empty string"),
        ("[host]\ntimeout = '5'\n", 2, "host.timeout", "number of seconds > 0"),
        ("[host]\ntimeout = 0\n", 2, "host.timeout", "> 0"),
        ("[host]\ntimeout = -1.5\n", 2, "host.timeout", "> 0"),
        ("[host]\ntimeout = true\n", 2, "host.timeout", "a boolean"),
        ("[host]\ntimeout = nan\n", 2, "host.timeout", "> 0"),
        ("[host]\ntimeout = inf\n", 2, "host.timeout", "> 0"),
        ("[host]\nerrors = 'isolated'\n", 2, "host.errors", "did you mean 'isolate'?"),
        ("[host]\nsignatures = 'strict'\n", 2, "host.signatures", "'off', 'warn', 'enforce'"),
        ("[host]\nleak_check = 'yes'\n", 2, "host.leak_check", "true or false"),
        ("[host]\nallow_users = [true]\n", 2, "host.allow_users", "numeric ids"),
        ("[host]\nallow_groups = [-1]\n", 2, "host.allow_groups", "numeric ids >= 0"),
        ("[host]\nallow_users = 'bob'\n", 2, "host.allow_users", "must be a list"),
        # load and blacklist
        ("load = 'greet'\n", 1, "load", "must be a list"),
        ("load = [1]\n", 1, "load", "non-empty string"),
        ("load = ['9lives']\n", 1, "load", "not a module name"),
        ("load = ['a', 'b', 'a']\n", 1, "load", "'a' is listed twice"),
        ("blacklist = ['x', 'x']\n", 1, "blacklist", "listed twice"),
        ("load = ['x']\nblacklist = ['x']\n", 1, "load", "also in blacklist (line 2)"),
        ("load = ['gr']\nblacklist = ['greet']\n[aliases]\ngr = 'greet'\n", 1, "load",
         "'gr' is also in blacklist"),
        ("load = ['gr', 'greet']\n[aliases]\ngr = 'greet'\n", 1, "load", "same module"),
        # options
        ("[options]\ngreet = 3\n", 2, "options.greet", "must be a table of params"),
        ("[options.greet]\nwhen = 1979-05-27\n", 2, "options.greet.when",
         "write it as a string"),
        ("[options.greet]\nsub = {a = 1}\n", 2, "options.greet.sub", "got a table"),
        ("[options.greet]\nxs = [[1]]\n", 2, "options.greet.xs", "list of those"),
        ("[options.gr]\nx = 1\n[aliases]\ngr = 'greet'\n", 1, "options.gr",
         "write [options.greet] instead"),
        # aliases
        ("[aliases]\nself = 'self'\n", 2, "aliases.self", "points to itself"),
        ("[aliases]\na = 3\n", 2, "aliases.a", "non-empty string"),
        ("[aliases]\na = 'b'\nb = 'c'\n", 2, "aliases.a", "itself an alias (of 'c')"),
        ("[aliases]\n'bad name' = 'x'\n", 2, "aliases.bad name", "not a module name"),
        # softdeps
        ("[softdeps]\nweb = ['log']\n", 2, "softdeps.web", "must be a table with pre"),
        ("[softdeps.web]\npre = 'log'\n", 2, "softdeps.web.pre", "must be a list"),
        ("[softdeps.web]\npre = ['web']\n", 2, "softdeps.web.pre", "its own soft dependency"),
        ("[softdeps.web]\npost = ['w']\n[aliases]\nw = 'web'\n", 2, "softdeps.web.post",
         "its own soft dependency"),
        ("blacklist = ['log']\n[softdeps.web]\npre = ['log']\n", 3, "softdeps.web.pre",
         "'log' is blacklisted"),
        ("[softdeps.w]\npre = ['log']\n[aliases]\nw = 'web'\n", 1, "softdeps.w",
         "write [softdeps.web] instead"),
    ],
)
def test_errors_name_file_line_and_key(text: str, line: int, key: str, fragment: str) -> None:
    exc = error(text)
    assert (exc.line, exc.key) == (line, key), str(exc)
    assert fragment in str(exc)
    assert f"/etc/livemod/livemod.toml:{line}: {key}: " in str(exc)


@pytest.mark.parametrize(
    ("text", "line", "where"),
    [
        ('[host]\nname = "x\n', 2, ":2:10: TOML syntax error"),
        ("load = ['a']\n[host]\nname = 'x' 'y'\n", 3, ":3:12: TOML syntax error"),
        ("[host]\nname = 'a'\nname = 'b'\n", 3, ":3:"),
        ("load = ['a',\n 'b'\n", 2, ":2: TOML syntax error: Unclosed array at the end"),
    ],
)
def test_syntax_errors_carry_line_and_column(text: str, line: int, where: str) -> None:
    exc = error(text)
    assert exc.line == line and exc.key is None
    assert where in str(exc) and "fix the TOML" in str(exc)


def test_key_lines_found_in_harder_layouts() -> None:
    # Quoted keys, dotted keys at the top level, comments and a multi-line string.
    text = ('# host below\n[ "host" ]  # comment\nname = """\ntimeout = 1\n"""\n'
            '"timeout" = 0\n')
    exc = error(text)
    assert (exc.line, exc.key) == (6, "host.timeout")
    assert error("load = []\nhost.timeout = -1\n").line == 2
    # A row of a multi-line array is not a table header.
    exc = error('load = [\n  ["a"]\n]\nlod = 1\n')
    assert (exc.line, exc.key) == (4, "lod")
    # A key inside an inline table is reported at the enclosing key's line.
    exc = error("[options]\n\ngreet = { x = { y = 1 } }\n")
    assert (exc.line, exc.key) == (3, "options.greet.x")


def test_unreadable_files(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(livemod.ConfigError, match="cannot read the configuration file") as info:
        load_config(missing)
    assert info.value.path == str(missing) and info.value.line is None
    latin = tmp_path / "latin.toml"
    latin.write_bytes(b'load = []\n[host]\nname = "caf\xe9"\n')
    with pytest.raises(livemod.ConfigError, match="not UTF-8") as info:
        load_config(latin)
    assert info.value.line == 3
