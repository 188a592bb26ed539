"""``livemod.testing.check_module``, ``livemod check`` and the pytest plugin (through
pytest's own ``pytester``, in a subprocess each, so the plugin is loaded from its entry
point exactly as a module author's pytest loads it)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import livemod
from livemod.testing import check_module

pytest_plugins = ["pytester"]

GOOD = '''"""Greets."""
__livemod__ = {"name": "good", "version": "1.0.0",
               "params": {"greeting": {"type": "str", "default": "hello"}}}
__livemod_smoke__ = {"request": [["Ada"], {"who": "Bob"}], "tick": [[]]}

def init(mod):
    mod.hook("request").add(lambda who: f"{mod.params.greeting}, {who}")
    mod.hook("tick").add(lambda: None)
'''

LEAKY = '''__livemod__ = {"name": "leaky", "version": "1.0.0"}
import logging

def cb():
    pass

def init(mod):
    logging.getLogger("livemod-test-registry").__dict__.setdefault("cbs", []).append(cb)
'''

RAISES = '''__livemod__ = {"name": "raises", "version": "1.0.0"}
__livemod_smoke__ = {"request": [[0]]}

def init(mod):
    mod.hook("request").add(lambda n: 1 / n)
'''


@pytest.fixture(autouse=True)
def _forget_leaky_registry() -> None:
    import logging

    logging.getLogger("livemod-test-registry").__dict__.pop("cbs", None)


def test_check_module_passes_a_clean_module_and_calls_its_smoke_cases(tmp_path: Path) -> None:
    (tmp_path / "good.py").write_text(GOOD)
    report = check_module(tmp_path / "good.py", params={"greeting": "hi"})
    assert report.name == "good" and report.not_called == ()
    assert report.calls == ("request('Ada')", "request(who='Bob')", "tick()") * 2


def test_check_module_names_the_problem(tmp_path: Path) -> None:
    (tmp_path / "leaky.py").write_text(LEAKY)
    with pytest.raises(AssertionError, match=r"(?s)module 'leaky' .*leaked after unload:\n.*"
                                             r"leaky\.cb <- list\[0\]"):
        check_module(tmp_path / "leaky.py")
    (tmp_path / "raises.py").write_text(RAISES)
    with pytest.raises(AssertionError, match=r"smoke call request\(0\) raised "
                                             r"ZeroDivisionError") as failed:
        check_module(tmp_path / "raises.py")
    assert isinstance(failed.value.__cause__, ZeroDivisionError)
    (tmp_path / "good.py").write_text(GOOD)
    with pytest.raises(AssertionError, match=r"smoke cases name hook\(s\) it does not "
                                             r"implement: nope"):
        check_module(tmp_path / "good.py", smoke={"nope": [[]]})
    with pytest.raises(AssertionError, match=r"load failed: .*wrong"):
        check_module(tmp_path / "good.py", params={"wrong": 1})


def test_check_module_loads_dependencies_from_the_module_folder(tmp_path: Path) -> None:
    (tmp_path / "base.py").write_text('__livemod__ = {"name": "base", "version": "1.0"}\n'
                                      "def init(mod):\n    mod.export('x', 1)\n")
    (tmp_path / "top.py").write_text('__livemod__ = {"name": "top", "version": "1.0", '
                                     '"depends": ["base"]}\n'
                                     "def init(mod):\n    assert mod.require('base').x == 1\n")
    assert check_module(tmp_path / "top.py").name == "top"


def test_livemod_check_command(tmp_path: Path) -> None:
    (tmp_path / "good.py").write_text(GOOD)
    (tmp_path / "leaky.py").write_text(LEAKY)
    cmd = [sys.executable, "-m", "livemod.cli", "check"]
    ok = subprocess.run([*cmd, str(tmp_path / "good.py"), "--param", "greeting=yo"],
                        capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("ok   good 1.0.0") and "6 smoke call(s)" in ok.stdout
    bad = subprocess.run([*cmd, str(tmp_path / "good.py"), str(tmp_path / "leaky.py"),
                          "--json"], capture_output=True, text=True, timeout=120)
    result = json.loads(bad.stdout)
    assert bad.returncode == 1 and not result["ok"]
    assert [m["ok"] for m in result["modules"]] == [True, False]
    assert "leaked after unload" in result["modules"][1]["message"]


def test_plugin_fixture_gives_a_host_and_fails_the_test_on_a_leak(
        pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_mods=f'''
import livemod

GOOD = {GOOD!r}
LEAKY = {LEAKY!r}

def test_clean(livemod_host, livemod_modpath):
    assert isinstance(livemod_host, livemod.Host)
    (livemod_modpath / "good.py").write_text(GOOD)
    livemod_host.modprobe("good")
    assert livemod_host.hook("request")("Ada") == ["hello, Ada"]

def test_leaks(livemod_host, livemod_modpath):
    (livemod_modpath / "leaky.py").write_text(LEAKY)
    livemod_host.modprobe("leaky")
''')
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*ERROR at teardown of test_leaks*",
                                 "*module code survived its unload*",
                                 "*leaky.cb <- list[[]0[]]*"])
    import logging

    assert "cbs" not in logging.getLogger("livemod-test-registry").__dict__  # other process


def test_plugin_is_registered_under_the_name_livemod() -> None:
    from importlib.metadata import entry_points

    (ep,) = [e for e in entry_points(group="pytest11") if e.name == "livemod"]
    assert ep.value == "livemod.pytest_plugin"


def test_the_projects_own_fixture_use(livemod_host: livemod.Host, livemod_modpath: Path) -> None:
    (livemod_modpath / "good.py").write_text(GOOD)
    assert livemod_host.modprobe("good").version == "1.0.0"
    livemod_host.rmmod("good")
