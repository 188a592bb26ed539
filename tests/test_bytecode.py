"""The bytecode cache: keyed by the bytes read, in livemod's folder, atomic, bounded (_bytecode)."""

from __future__ import annotations

import marshal
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import NoReturn

import pytest

import livemod
from livemod import _bytecode, _cache_root, _manifest, _source
from livemod import _manifest_limits as _limits

FIXTURES = Path(__file__).parent / "fixtures" / "modules"


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("LIVEMOD_CACHE_DIR", str(folder))
    monkeypatch.delenv("LIVEMOD_BYTECODE_CACHE", raising=False)
    monkeypatch.setattr(sys, "dont_write_bytecode", False)  # PYTHONDONTWRITEBYTECODE=1
    return folder / "bytecode"


def entries(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*") if not p.name.startswith(".tmp-"))


def test_a_load_fills_the_cache_and_never_writes_next_to_the_module(
    cache: Path, tmp_path: Path
) -> None:
    pkg = tmp_path / "mods" / "cached9"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text('__livemod__ = {"name": "cached9"}\nfrom . import sub\n')
    (pkg / "sub.py").write_text("VALUE = 5\n")
    with livemod.Host(modpath=[tmp_path / "mods"]) as host:
        host.insmod(pkg)
        assert host.namespace("cached9").sub.VALUE == 5
        host.rmmod("cached9")
        assert len(entries(cache)) == 2  # the package and its submodule
        host.insmod(pkg)  # warm: served from the cache
        assert host.namespace("cached9").sub.VALUE == 5
    assert len(entries(cache)) == 2
    assert not list(pkg.rglob("__pycache__")) and not list(pkg.rglob("*.pyc"))


def test_a_hit_returns_the_cached_code_without_compiling(cache: Path) -> None:
    source, name = b"ANSWER = 1\n", "/nowhere/answer.py"
    first = _bytecode.compile_cached(source, name)
    [entry] = entries(cache)
    # Replace the entry with different (valid) code under the same key: a hit returns it,
    # which shows the cache is consulted instead of compiling.
    other = compile(b"ANSWER = 2\n", name, "exec", dont_inherit=True)
    _bytecode._write(str(entry), other)
    ns: dict[str, int] = {}
    exec(_bytecode.compile_cached(source, name), ns)
    assert ns["ANSWER"] == 2
    exec(first, ns)
    assert ns["ANSWER"] == 1


def test_different_bytes_or_file_name_never_hit_and_a_torn_entry_is_a_miss(cache: Path) -> None:
    _bytecode.compile_cached(b"X = 1\n", "/a.py")
    _bytecode.compile_cached(b"X = 2\n", "/a.py")
    code = _bytecode.compile_cached(b"X = 1\n", "/b.py")
    assert code.co_filename == "/b.py"
    assert len(entries(cache)) == 3
    for entry in entries(cache):
        entry.write_bytes(entry.read_bytes()[:-3])  # torn
    ns: dict[str, int] = {}
    exec(_bytecode.compile_cached(b"X = 2\n", "/a.py"), ns)
    assert ns["X"] == 2


def test_the_off_switch_writes_nothing(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIVEMOD_BYTECODE_CACHE", "0")
    assert not _bytecode.enabled()
    _bytecode.compile_cached(b"X = 1\n", "/off.py")
    assert not cache.exists()


def test_dont_write_bytecode_is_honoured_for_writing_only(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _bytecode.compile_cached(b"X = 1\n", "/b.py")
    monkeypatch.setattr(sys, "dont_write_bytecode", True)  # as -B or PYTHONDONTWRITEBYTECODE
    _bytecode.compile_cached(b"X = 2\n", "/b.py")
    [entry] = entries(cache)
    _bytecode._write(str(entry), compile(b"X = 3\n", "/b.py", "exec"))  # read still
    ns: dict[str, int] = {}
    exec(_bytecode.compile_cached(b"X = 1\n", "/b.py"), ns)
    assert ns["X"] == 3 and len(entries(cache)) == 1


def test_the_default_folder_is_the_xdg_cache(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("LIVEMOD_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert _bytecode.cache_dir() == str(tmp_path / "xdg" / "livemod" / "bytecode")


def test_the_cache_folder_follows_every_change_of_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The folder is remembered for the values it was made from (it is asked at every load);
    # each of the three variables it depends on must still move it, and back.
    monkeypatch.setenv("LIVEMOD_CACHE_DIR", str(tmp_path / "explicit"))
    assert _bytecode.cache_dir() == str(tmp_path / "explicit" / "bytecode")
    assert _cache_root.root() == str(tmp_path / "explicit")
    monkeypatch.delenv("LIVEMOD_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert _cache_root.root() == str(tmp_path / "xdg" / "livemod")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert _cache_root.root() == str(tmp_path / "home" / ".cache" / "livemod")
    monkeypatch.setenv("HOME", str(tmp_path / "other"))
    assert _cache_root.root() == str(tmp_path / "other" / ".cache" / "livemod")
    monkeypatch.setenv("LIVEMOD_CACHE_DIR", str(tmp_path / "explicit"))
    assert _cache_root.root() == str(tmp_path / "explicit")


def test_concurrent_writers_of_one_key_leave_one_whole_entry(cache: Path) -> None:
    source = b"".join(b"V%d = %d\n" % (i, i) for i in range(3000))
    script = (
        "import sys; from livemod import _bytecode\n"
        "for _ in range(20):\n"
        "    code = _bytecode.compile_cached(sys.stdin.buffer.read() or SRC, '/race.py')\n"
        "    ns = {}; exec(code, ns)\n"
    ).replace("SRC", repr(source))
    procs = [subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.DEVNULL,
                              env={**os.environ}) for _ in range(3)]
    barrier = threading.Barrier(4)
    failures: list[BaseException] = []

    def writer() -> None:
        barrier.wait()
        try:
            for _ in range(20):
                ns: dict[str, int] = {}
                exec(_bytecode.compile_cached(source, "/race.py"), ns)
                assert ns["V2999"] == 2999
                [entry] = entries(cache)
                _bytecode._write(str(entry), compile(source, "/race.py", "exec"))
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert all(p.wait(timeout=60) == 0 for p in procs)
    assert not failures, failures
    assert len(entries(cache)) == 1
    assert not list(cache.glob(".tmp-*"))  # no temporary file left behind


def test_the_cache_is_bounded(cache: Path) -> None:
    for i in range(10):
        _bytecode.compile_cached(b"X = %d\n" % i, "/bound.py")
        path = entries(cache)
        os.utime(max(path, key=lambda p: p.stat().st_mtime_ns), (1000 + i, 1000 + i))
    assert _bytecode.prune(limit=4) == 6
    left = entries(cache)
    assert len(left) == 4
    assert sorted(p.stat().st_mtime for p in left) == [1006, 1007, 1008, 1009]


MANIFEST = '''\
"""Kept with its code."""
__livemod__ = {
    "name": "kept7", "version": "1.2.0", "license": "MIT", "author": "A. Person",
    "aliases": ["kept.seven", "keptalias"],
    "params": {
        "greeting": {"type": "str", "default": "hello", "writable": True, "doc": "word"},
        "ratio": {"type": "float", "default": 2},
        "tags": {"type": "list", "default": ["a", 1, True]},
        "target": {"type": "str"},
    },
}

def init(mod):
    pass
'''


def test_the_checked_manifest_is_kept_with_the_code_and_read_back_whole(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "kept7.py"
    path.write_text(MANIFEST)
    with livemod.Host() as host:
        first = host.insmod(path, target="x").info
    [entry] = entries(cache)
    _manifest._PARSED.clear()  # as in a new process

    def no_parsing(*args: object, **kwargs: object) -> NoReturn:
        raise AssertionError("the manifest was parsed again")

    monkeypatch.setattr(_source, "parse_manifest", no_parsing)
    with livemod.Host() as host:
        again = host.insmod(path, target="x").info
    assert again == first and dict(again.params) == dict(first.params)
    assert again.params["target"].required and again.params["tags"].default == ("a", 1, True)
    assert entries(cache) == [entry]  # read, not written again


def test_a_kept_manifest_is_not_used_under_other_limits_or_for_another_path(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "kept7.py"
    path.write_text(MANIFEST)
    with livemod.Host() as host:
        host.insmod(path, target="x")
    _manifest._PARSED.clear()
    monkeypatch.setattr(_limits, "LIMITS", _limits.ManifestLimits(aliases=1))
    with livemod.Host() as host, pytest.raises(livemod.ManifestError, match="aliases"):
        host.insmod(path, target="x")
    monkeypatch.undo()
    # The record names the path it was read for: another path reads its manifest itself.
    info = _manifest.read_manifest(path)
    assert _manifest.from_record(_manifest.record_of(info), path="/elsewhere.py",
                                 source_file="/elsewhere.py", is_package=False) is None
    assert _manifest.from_record(("not", "a", "record"), path=info.path,
                                 source_file=info.source_file, is_package=False) is None


@pytest.mark.parametrize("fixture", sorted((FIXTURES).glob("*.py")), ids=lambda p: p.name)
def test_every_fixture_manifest_survives_the_record(fixture: Path) -> None:
    try:
        info = _manifest.read_manifest(fixture)
    except livemod.ManifestError:
        return  # a broken one is never recorded
    record = marshal.loads(marshal.dumps(_manifest.record_of(info)))
    assert _manifest.from_record(record, path=info.path, source_file=info.source_file,
                                 is_package=info.is_package) == info
