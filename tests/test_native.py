"""Extension modules in a package: loaded under the private name, each version from a copy
of its own, capped; the Python side unloads; what only C statics hold is not a leak.

Two tiny extensions are compiled at test time with the system C compiler (skipped, saying
why, where there is none): a single-phase one with C statics and a multi-phase one with a
static type -- the two ways a second load of the same file goes silently wrong.
"""

from __future__ import annotations

import gc
import importlib.machinery
import os
import shutil
import subprocess
import sys
import sysconfig
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest

import livemod
from livemod import _native

SOURCES = Path(__file__).parent / "fixtures" / "native"
SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]

INIT = '''"""A package with native speedups."""
__livemod__ = {"name": "nat", "version": "VERSION"}

from . import mpcount, spcount


class Payload:
    pass


def keep_in_c():
    spcount.hold(Payload())
'''


def _compiler() -> str | None:
    cc = shutil.which(os.environ.get("CC", "gcc")) or shutil.which("cc")
    include = sysconfig.get_paths()["include"]
    if cc is None or not os.path.exists(os.path.join(include, "Python.h")):
        return None
    return cc


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with spcount and mpcount compiled for this interpreter."""
    cc = _compiler()
    if cc is None:
        pytest.skip("no C compiler or no Python.h for this interpreter: cannot build the "
                    "test extensions (install gcc and the Python headers)")
    out = tmp_path_factory.mktemp("built")
    include = sysconfig.get_paths()["include"]
    for name in ("spcount", "mpcount"):
        subprocess.run([cc, "-shared", "-fPIC", "-O0", f"-I{include}", "-o",
                        str(out / f"{name}{SUFFIX}"), str(SOURCES / f"{name}.c")],
                       check=True, capture_output=True, timeout=120)
    return out


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    folder = tmp_path / "cache"
    monkeypatch.setenv("LIVEMOD_CACHE_DIR", str(folder))
    yield folder


def package(where: Path, built: Path, version: str = "1.0") -> Path:
    pkg = where / "nat"
    pkg.mkdir(parents=True, exist_ok=True)
    (pkg / "__init__.py").write_text(INIT.replace("VERSION", version))
    for so in built.iterdir():
        shutil.copy(so, pkg / so.name)
    return pkg


def test_extensions_load_from_a_copy_and_show_as_native(
    tmp_path: Path, built: Path, cache: Path
) -> None:
    pkg = package(tmp_path / "mods", built)
    with livemod.Host() as host:
        host.insmod(pkg)
        inst = host._table.names["nat"]
        sp = sys.modules[inst.private_name + ".spcount"]
        assert sp.bump() == 1 and sp.bump() == 2
        assert sp.__file__ is not None and sp.__file__.startswith(str(cache))
        assert os.stat(sp.__file__).st_ino != os.stat(pkg / f"spcount{SUFFIX}").st_ino
        [row] = host.lsmod()
        assert sorted(row.native) == ["nat.mpcount", "nat.spcount"]
        assert sorted(host.modinfo(str(pkg)).native) == [f"mpcount{SUFFIX}", f"spcount{SUFFIX}"]


def test_two_live_versions_have_their_own_statics_and_types(
    tmp_path: Path, built: Path, cache: Path
) -> None:
    """The same bytes loaded twice at once (two hosts, or v1 and v2 during an upgrade):
    a second init does not reset the first one's C statics, and types are not shared."""
    pkg = package(tmp_path / "mods", built)
    with livemod.Host() as h1, livemod.Host() as h2:
        h1.insmod(pkg)
        one = sys.modules[h1._table.names["nat"].private_name + ".spcount"]
        assert one.bump() == 1 and one.bump() == 2
        h2.insmod(pkg)
        two = sys.modules[h2._table.names["nat"].private_name + ".spcount"]
        assert two.bump() == 1  # its own counter...
        assert one.bump() == 3  # ...and the first one's was not reset by the second init
        mp1 = sys.modules[h1._table.names["nat"].private_name + ".mpcount"]
        mp2 = sys.modules[h2._table.names["nat"].private_name + ".mpcount"]
        assert mp1.Counter is not mp2.Counter


@pytest.mark.asserts_leak
def test_an_upgrade_runs_new_native_state_and_unloads_the_old_python_side(
    tmp_path: Path, built: Path, cache: Path
) -> None:
    pkg = package(tmp_path / "mods", built)
    with livemod.Host() as host:
        host.insmod(pkg)
        old = host._table.names["nat"]
        old_init = weakref.ref(sys.modules[old.private_name])
        sys.modules[old.private_name + ".spcount"].bump()
        package(tmp_path / "mods", built, version="2.0")
        host.replace("nat")
        new = host._table.names["nat"]
        assert sys.modules[new.private_name + ".spcount"].bump() == 1
        gc.collect()
        assert old_init() is None  # the old Python side is gone
        assert host.leaks() == []
        assert not [t for t in host.tainted if t.flag == "module-leaked"]


@pytest.mark.asserts_leak
def test_what_only_c_statics_hold_is_held_outside_the_gc_not_a_leak(
    tmp_path: Path, built: Path, cache: Path
) -> None:
    pkg = package(tmp_path / "mods", built)
    with livemod.Host() as host:
        host.insmod(pkg)
        private = host._table.names["nat"].private_name
        sys.modules[private].keep_in_c()
        payload = weakref.ref(sys.modules[private].Payload)
        host.rmmod("nat")
        gc.collect()
        assert payload() is not None  # the C static still holds an instance of it
        assert host.leaks() == []
        assert not [t for t in host.tainted if t.flag == "module-leaked"]
        [event] = [e for e in host.events() if "held outside the GC" in e.message]
        assert "nat.spcount" in event.message
        assert any("held outside the GC" in c for c in event.data["held_outside_gc"])  # type: ignore[union-attr]


def test_past_the_cap_a_load_is_refused_and_the_host_is_unchanged(
    tmp_path: Path, built: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pkg = package(tmp_path / "mods", built)
    monkeypatch.setattr(_native.CACHE, "max_copies", _native.CACHE.copies + 1)
    before = set(sys.modules)
    with livemod.Host() as host:
        with pytest.raises(livemod.NativeCacheFull) as caught:
            host.insmod(pkg)
        assert "'nat'" in str(caught.value) and "LIVEMOD_NATIVE_MAX_COPIES" in str(caught.value)
        assert caught.value.code == "native-cache-full"
        assert host.lsmod() == []
        assert set(sys.modules) == before
        assert not cache.exists() or not any(cache.rglob(f"*{SUFFIX}"))


def test_past_the_cap_an_upgrade_is_refused_and_the_old_version_serves(
    tmp_path: Path, built: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pkg = package(tmp_path / "mods", built)
    with livemod.Host() as host:
        host.insmod(pkg)
        monkeypatch.setattr(_native.CACHE, "max_copies", _native.CACHE.copies + 1)
        with pytest.raises(livemod.NativeCacheFull):
            host.replace("nat")
        [row] = host.lsmod()
        assert row.state is livemod.State.LIVE and row.version == "1.0"
        private = host._table.names["nat"].private_name
        assert sys.modules[private + ".spcount"].bump() == 1


def test_markupsafe_speedups_from_pypi(tmp_path: Path, cache: Path) -> None:
    """markupsafe's ``_speedups`` (a real multi-phase extension) in a livemod copy."""
    markupsafe = pytest.importorskip("markupsafe")
    source = Path(markupsafe.__file__).parent
    if not list(source.glob(f"_speedups*{SUFFIX}")):
        pytest.skip("this markupsafe has no compiled _speedups")
    pkg = tmp_path / "mods" / "markupsafe"
    shutil.copytree(source, pkg, ignore=shutil.ignore_patterns("__pycache__"))
    init = pkg / "__init__.py"
    text = init.read_text()
    future = "from __future__ import annotations\n"
    head, _, rest = text.partition(future) if future in text else ("", "", text)
    manifest = '__livemod__ = {"name": "markupsafe", "version": "3"}\n'
    init.write_text(head + future + manifest + rest if future in text else manifest + rest)
    with livemod.Host() as host:
        host.insmod(pkg)
        [row] = host.lsmod()
        assert any(n.startswith("markupsafe._speedups") for n in row.native), row.native
        private = host._table.names["markupsafe"].private_name
        assert str(sys.modules[private].escape("<b>")) == "&lt;b&gt;"
        host.rmmod("markupsafe")
        assert host.leaks() == []


def test_lsmod_and_modinfo_show_native_code(
    tmp_path: Path, built: Path, cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Through a real control socket, as an operator sees it."""
    import tempfile

    from livemod.cli import main
    from livemod.control import ControlServer

    pkg = package(tmp_path / "mods", built)
    sockdir = tempfile.mkdtemp(prefix="lmn")  # a socket path must fit in 107 bytes
    try:
        with livemod.Host() as host, ControlServer(host, os.path.join(sockdir, "h.sock")) as srv:
            host.insmod(pkg)
            assert main(["--socket", srv.path, "lsmod"]) == 0
            out = capsys.readouterr().out
            assert out.splitlines()[0].split()[-1] == "Native" and "2 ext" in out
            assert main(["--socket", srv.path, "modinfo", "nat"]) == 0
            out = capsys.readouterr().out
            assert f"native:      spcount{SUFFIX} (loaded; stays mapped" in out, out
            assert "state:       LIVE" in out
            assert main(["modinfo", str(pkg)]) == 0  # offline: the files, nothing loaded
            out = capsys.readouterr().out
            assert f"native:      mpcount{SUFFIX}\n" in out and "state:" not in out
    finally:
        shutil.rmtree(sockdir, ignore_errors=True)


HOLDER = """
import sys, livemod
host = livemod.Host()
host.insmod(sys.argv[1])
print("loaded", flush=True)
sys.stdin.readline()  # keep the copies mapped until told
"""


def test_the_disk_cache_is_pruned_oldest_first_never_a_copy_in_use(
    tmp_path: Path, built: Path, cache: Path
) -> None:
    from livemod import _native_disk

    pkg = package(tmp_path / "mods", built)
    env = {**os.environ, "LIVEMOD_CACHE_DIR": str(cache),
           "PYTHONPATH": os.pathsep.join(sys.path)}
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(pkg)], env=env, text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "loaded\n"
        root = cache / "native"
        in_use = sorted(str(p) for p in root.rglob(f"*{SUFFIX}"))
        assert len(in_use) == 2
        # Older copies no process has mapped (another version's, from a process gone).
        stale = []
        for age, digest in enumerate(("a" * 64, "b" * 64)):
            old = root / digest / "0" / f"old{SUFFIX}"
            old.parent.mkdir(parents=True)
            old.write_bytes(b"x" * 10)
            os.utime(old, (1000 + age, 1000 + age))
            stale.append(old)
        removed = _native_disk.prune(str(root), max_bytes=2**40, max_files=3)
        assert removed == [str(stale[0])]  # the oldest first, and only as many as needed
        removed = _native_disk.prune(str(root), max_bytes=0, max_files=0)
        assert removed == [str(stale[1])] and not (root / ("b" * 64)).exists()
        assert sorted(str(p) for p in root.rglob(f"*{SUFFIX}")) == in_use  # mapped: kept
    finally:
        holder.communicate("\n", timeout=30)
    # Its process is gone, and with it its locks: now they may go.
    assert len(_native_disk.prune(str(cache / "native"), max_bytes=0, max_files=0)) == 2
