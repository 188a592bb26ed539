"""depmod: the modpath index, its saved form, staleness, entry points, and ModPath over it."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import livemod
from livemod import _depmod_entry
from livemod._depmod import INDEX_NAME, Index, build_index, open_index
from livemod._modpath import ModPath
from livemod.errors import ManifestError

SRC = str(Path(livemod.__file__).resolve().parent.parent)


def module_source(name: str, version: str = "1.0", *, aliases: tuple[str, ...] = (),
                  depends: tuple[str, ...] = (), doc: str = "A test module.") -> str:
    manifest = {"name": name, "version": version, "aliases": list(aliases),
                "depends": list(depends),
                "params": {"n": {"type": "int", "default": 3, "doc": "a number"},
                           "tags": {"type": "list", "default": ["a", 1]}}}
    return f'"""{doc}"""\n__livemod__ = {manifest!r}\n\n\ndef init(mod):\n    pass\n'


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    mods = tmp_path / "mods"
    write(mods / "greet.py", module_source("greet", "1.2.0", aliases=("greeter", "hello"),
                                           depends=("log>=1.0",), doc="Greets people."))
    write(mods / "log.py", module_source("log", "1.5"))
    write(mods / "webpkg" / "__init__.py", module_source("web", "2.0", depends=("greet",)))
    write(mods / "webpkg" / "util.py", "X = 1\n")
    write(mods / "webpkg" / "sub" / "deep.py", "Y = 2\n")
    write(mods / "broken.py", '__livemod__ = {"name": "broken", "version": 7}\n')
    write(mods / "_helper.py", "not a module at all (\n")
    write(mods / "notes.txt", "ignored\n")
    return mods


def test_build_index_records_modules_and_files(folder: Path) -> None:
    index = build_index([folder], entry_points=False)
    by_name = {info.name: info for info in index.modules()}
    assert sorted(by_name) == ["greet", "log", "web"]
    greet = by_name["greet"]
    assert (greet.version, greet.aliases, greet.description) == (
        "1.2.0", ("greeter", "hello"), "Greets people.")
    assert [str(req) for req in greet.depends] == ["log>=1.0"]
    assert greet.path == str(folder / "greet.py") and not greet.is_package
    web = by_name["web"]
    assert web.is_package and web.path == str(folder / "webpkg")
    assert web.source_file == str(folder / "webpkg" / "__init__.py")
    entry = next(e for e in index.entries() if e.slot == "webpkg")
    assert [f.path for f in entry.files] == ["__init__.py", "sub/deep.py", "util.py"]
    for stamp in entry.files:
        data = (folder / "webpkg" / stamp.path).read_bytes()
        assert stamp.sha256 == hashlib.sha256(data).hexdigest()
        assert stamp.size == len(data)
        assert stamp.mtime_ns == (folder / "webpkg" / stamp.path).stat().st_mtime_ns
    assert {rel for rel, _ in entry.dirs} == {".", "sub"}


def test_broken_modules_are_listed_not_fatal(folder: Path) -> None:
    index = build_index([folder], entry_points=False)
    [(path, error)] = index.broken()
    assert path == str(folder / "broken.py")
    assert error.startswith("ManifestError: ") and "'version'" in error
    assert index.find("log") is not None  # the rest of the folder is usable


def test_oversized_file_is_listed_broken_without_being_read(folder: Path) -> None:
    # A sparse file past the load's limit: depmod must refuse it from its size, as a load
    # does, not read gigabytes into memory to hash them.
    from livemod._source import MAX_FILE

    big = folder / "huge.py"
    with open(big, "wb") as fh:
        fh.truncate(64 * MAX_FILE)
    index = build_index([folder], entry_points=False)
    broken = dict(index.broken())
    assert broken[str(big)].startswith("ManifestError: ")
    assert "larger than a module file may be" in broken[str(big)]
    assert index.find("greet") is not None  # the rest of the folder is usable


def test_missing_folder_is_an_empty_part(tmp_path: Path) -> None:
    index = build_index([tmp_path / "nowhere"], entry_points=False)
    assert index.modules() == () and index.find("x") is None


def test_save_and_load_round_trip(folder: Path, tmp_path: Path) -> None:
    index = build_index([folder], entry_points=False)
    target = tmp_path / "index.json"
    index.save(target)
    doc = json.loads(target.read_text())
    assert (doc["format"], doc["version"]) == ("livemod-depmod", 1)
    loaded = Index.load(target)
    assert loaded.entries() == index.entries()
    assert loaded.folders == (str(folder),)
    params = loaded.find("greet").params  # type: ignore[union-attr]
    assert params["tags"].default == ("a", 1) and params["n"].doc == "a number"
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


@pytest.mark.parametrize("content", [
    b"{not json", b"[]", b'{"format": "livemod-depmod", "version": 99}',
    b'{"format": "livemod-depmod", "version": 1, "folders": [{"folder": 1}]}',
])
def test_load_refuses_what_is_not_an_index(tmp_path: Path, content: bytes) -> None:
    target = tmp_path / "index.json"
    target.write_bytes(content)
    with pytest.raises(ManifestError, match="not a usable livemod depmod index"):
        Index.load(target)


def test_lookup_by_name_and_alias(folder: Path) -> None:
    index = build_index([folder], entry_points=False)
    assert index.find("greet").name == "greet"  # type: ignore[union-attr]
    assert index.find("hello").name == "greet"  # type: ignore[union-attr]
    assert index.find("web").path == str(folder / "webpkg")  # type: ignore[union-attr]
    assert index.find("nosuch") is None


def test_first_folder_wins_and_named_file_comes_first(folder: Path, tmp_path: Path) -> None:
    first = tmp_path / "first"
    write(first / "other.py", module_source("log", "9.0"))
    write(first / "hello.py", module_source("hello", "3.0"))
    write(first / "a.py", module_source("solo", "1.0"))
    write(folder / "b.py", module_source("solo", "2.0"))
    index = build_index([first, folder], entry_points=False)
    # A file named after the module (in any folder) beats a file named otherwise.
    assert index.find("log").version == "1.5"  # type: ignore[union-attr]
    assert index.find("solo").version == "1.0"  # type: ignore[union-attr]
    assert index.find("hello").version == "3.0"  # type: ignore[union-attr]
    assert index.find("greeter").name == "greet"  # type: ignore[union-attr]


def test_named_file_errors(folder: Path) -> None:
    write(folder / "mismatch.py", module_source("something_else"))
    index = build_index([folder], entry_points=False)
    with pytest.raises(ManifestError, match="declares the name 'something_else'"):
        index.find("mismatch")
    with pytest.raises(ManifestError) as info:
        index.find("broken")
    assert info.value.line == 1 and info.value.field == "version"


def test_edit_is_seen_on_lookup(folder: Path) -> None:
    index = build_index([folder], entry_points=False)
    write(folder / "log.py", module_source("log", "2.0.1"))
    assert index.find("log").version == "2.0.1"  # type: ignore[union-attr]


def test_racy_edit_with_same_size_and_mtime_is_seen(folder: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    # A wide window keeps the stamp racy however slow this machine is today.
    monkeypatch.setattr(_depmod_entry, "_RACY_NS", 60 * 10**9)
    log = folder / "log.py"
    index = build_index([folder], entry_points=False)
    before = log.stat()
    write(log, module_source("log", "1.6"))  # same length as "1.5"
    os.utime(log, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert log.stat().st_size == before.st_size
    # Read within the racy window, the stamp is not trusted: the hash tells the change.
    assert index.find("log").version == "1.6"  # type: ignore[union-attr]


def test_add_delete_rename_and_alias_edit(folder: Path) -> None:
    index = build_index([folder], entry_points=False)
    write(folder / "fresh.py", module_source("fresh"))
    assert index.find("fresh") is not None
    (folder / "fresh.py").unlink()
    assert index.find("fresh") is None
    (folder / "log.py").rename(folder / "logging2.py")
    assert index.find("log").path == str(folder / "logging2.py")  # type: ignore[union-attr]
    # An edit in place leaves the folder's mtime alone; a miss looks at every entry again.
    write(folder / "logging2.py", module_source("log", "1.5", aliases=("journal",)))
    assert index.find("journal").name == "log"  # type: ignore[union-attr]
    write(folder / "logging2.py", module_source("log", "1.5"))
    assert index.find("journal") is None
    assert str(folder / "fresh.py") not in list(index.candidates())


def test_package_file_added_is_stamped(folder: Path) -> None:
    index = build_index([folder], entry_points=False)
    write(folder / "webpkg" / "sub" / "more.py", "Z = 3\n")
    assert index.find("web") is not None
    entry = next(e for e in index.entries() if e.slot == "webpkg")
    assert "sub/more.py" in [f.path for f in entry.files]


def test_unchanged_modules_are_not_parsed_again(folder: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    index = build_index([folder], entry_points=False)
    modpath = ModPath([str(folder)], entry_points=False)
    report = modpath.depmod()
    assert report.written == (str(folder / INDEX_NAME),)

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("an unchanged module was parsed again")

    monkeypatch.setattr(_depmod_entry, "parse_manifest", refuse)
    index.refresh()
    assert index.find("greet") is not None
    # A new ModPath starts from the saved index: nothing is parsed either.
    assert ModPath([str(folder)], entry_points=False).find("hello") is not None


def test_modpath_depmod_report(folder: Path) -> None:
    report = ModPath([str(folder)], entry_points=False).depmod()
    assert sorted(info.name for info in report.modules) == ["greet", "log", "web"]
    assert [path for path, _ in report.broken] == [str(folder / "broken.py")]
    assert report.entry_points == 0 and report.unwritable == () and report.seconds >= 0
    saved = Index.load(folder / INDEX_NAME)
    assert saved.folders == (str(folder),)
    assert sorted(i.name for i in saved.modules()) == ["greet", "log", "web"]
    assert list(ModPath([str(folder)], entry_points=False).candidates()) == [
        str(folder / n) for n in ("broken.py", "greet.py", "log.py", "webpkg")]


def test_corrupt_saved_index_is_ignored(folder: Path) -> None:
    (folder / INDEX_NAME).write_text('{"format": "livemod-depmod", "version": 1}')
    assert ModPath([str(folder)], entry_points=False).find("greet") is not None
    # An index saved for another folder (a copied tree) is ignored too.
    other = folder.parent / "copy"
    write(other / "solo.py", module_source("solo"))
    build_index([other], entry_points=False).save(folder / INDEX_NAME)
    assert open_index([folder], entry_points=False).find("solo") is None


def test_unwritable_index_stays_in_memory(folder: Path) -> None:
    # Works as root too: a folder in the way makes the rename fail.
    (folder / INDEX_NAME).mkdir()
    modpath = ModPath([str(folder)], entry_points=False)
    report = modpath.depmod()
    assert report.written == () and [f for f, _ in report.unwritable] == [str(folder)]
    assert modpath.find("greet") is not None
    assert not [p for p in os.listdir(folder) if p.endswith(".tmp")]


READ_ONLY_CHECK = """
import os, sys
from livemod._modpath import ModPath
folder = sys.argv[1]
modpath = ModPath([folder], entry_points=False)
report = modpath.depmod()
assert report.written == (), report
[(where, why)] = report.unwritable
assert where == folder and why, report
assert modpath.find("hello").name == "greet"
assert sorted(os.listdir(folder)) == ["greet.py"], os.listdir(folder)
print("ok")
"""


def test_read_only_folder(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    write(folder / "greet.py", module_source("greet", aliases=("hello",)))
    command = [sys.executable, "-c", READ_ONLY_CHECK, str(folder)]
    if os.geteuid() == 0:
        # Root ignores file modes; without these capabilities it must obey them.
        if shutil.which("setpriv") is None:
            pytest.skip("running as root and setpriv is missing: cannot make a folder read-only")
        command = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search,-fowner",
                   "--", *command]
    folder.chmod(0o555)
    try:
        done = subprocess.run(command, env={**os.environ, "PYTHONPATH": SRC},
                              capture_output=True, text=True, timeout=60)
    finally:
        folder.chmod(0o755)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


# -- entry points ----------------------------------------------------------------------------

@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A tiny installed distribution 'lmdemo' declaring entry points in livemod.modules."""
    root = tmp_path / "site"
    boom = 'raise RuntimeError("a parent package was imported")\n'
    write(root / "lmdemo_pkg" / "__init__.py", boom)
    write(root / "lmdemo_pkg" / "plugins" / "__init__.py", boom)
    write(root / "lmdemo_pkg" / "plugins" / "epgreet.py",
          module_source("epgreet", "0.3", aliases=("ep-hello",)) + "\ndef hi():\n    return 1\n")
    write(root / "lmdemo_pkg" / "plugins" / "eppkg" / "__init__.py", module_source("eppkg"))
    info = root / "lmdemo-1.0.dist-info"
    write(info / "METADATA", "Metadata-Version: 2.1\nName: lmdemo\nVersion: 1.0\n")
    write(info / "entry_points.txt", textwrap.dedent("""\
        [livemod.modules]
        greet = lmdemo_pkg.plugins.epgreet
        pkg = lmdemo_pkg.plugins.eppkg
        gone = lmdemo_pkg.plugins.nosuch

        [console_scripts]
        lmdemo = lmdemo_pkg:main
        """))
    monkeypatch.syspath_prepend(str(root))
    return root


def test_entry_points_are_indexed_without_running_anything(site: Path, folder: Path) -> None:
    index = build_index([folder])
    info = index.find("ep-hello")
    assert info is not None and info.name == "epgreet" and info.version == "0.3"
    assert info.path == str(site / "lmdemo_pkg" / "plugins" / "epgreet.py")
    pkg = index.find("eppkg")
    assert pkg is not None and pkg.is_package
    assert not [m for m in sys.modules if m.startswith("lmdemo_pkg")]
    eps = [e for e in index.entries() if e.entry_point]
    assert [e.slot for e in eps] == ["lmdemo:gone", "lmdemo:greet", "lmdemo:pkg"]
    broken = dict(index.broken())
    assert any("lmdemo_pkg.plugins.nosuch" in error for error in broken.values())
    # Entry points come after the modpath folders and are saved with the whole index.
    assert index.entries()[-1].slot == "lmdemo:pkg"
    index.save(folder.parent / "all.json")
    assert Index.load(folder.parent / "all.json").find("epgreet") == info


def test_modpath_folder_shadows_an_entry_point(site: Path, folder: Path) -> None:
    write(folder / "epgreet.py", module_source("epgreet", "5.0"))
    assert build_index([folder]).find("epgreet").version == "5.0"  # type: ignore[union-attr]


def test_host_modprobe_loads_an_entry_point_module(site: Path) -> None:
    with livemod.Host(modpath=[], leak_check=False) as host:
        module = host.modprobe("ep-hello")
        assert module.name == "epgreet"
        assert [st.name for st in host.lsmod()] == ["epgreet"]
        report = host._modpath.depmod(write=False)
        assert report.entry_points == 3 and report.written == ()


def test_depmod_stamps_exactly_the_files_a_load_reads(tmp_path: Path) -> None:
    from livemod._source import read_module

    mods = tmp_path / "mods"
    pkg = mods / "datapkg"
    write(pkg / "__init__.py", module_source("datapkg"))
    write(pkg / "data.txt", "read by the module at run time\n")
    write(pkg / ".settings", "a dotfile is a file of the module too\n")
    write(pkg / "sub" / "deep.py", "Y = 2\n")
    write(pkg / "__pycache__" / "x.cpython-311.pyc", "not source\n")
    write(pkg / "stale.pyc", "not source\n")
    (tmp_path / "elsewhere").mkdir()
    write(tmp_path / "elsewhere" / "outside.py", "Z = 3\n")
    os.symlink(tmp_path / "elsewhere", pkg / "linked")  # a linked folder is not followed
    entry = next(e for e in build_index([mods], entry_points=False).entries()
                 if e.slot == "datapkg")
    loaded = read_module(pkg, signature=False)
    assert [f.path for f in entry.files] == sorted(loaded.files)
    assert sorted(loaded.files) == [".settings", "__init__.py", "data.txt", "sub/deep.py"]


def test_the_public_depmod_module_indexes_a_folder(folder: Path) -> None:
    from livemod.depmod import depmod

    report = depmod(folder)
    assert sorted(info.name for info in report.modules) == ["greet", "log", "web"]
    assert [path for path, _ in report.broken] == [str(folder / "broken.py")]
    assert report.written == (str(folder / INDEX_NAME),)
