"""A package loaded with signatures off reads a file when it is first imported; a file
changed on disk since the load began is refused, never run (``_lazy_read``).

Files a test writes are "racy" (changed in the last moments, when a rewrite could keep the
same timestamps), and those are read at once; ``no_racy_window`` turns that off so that the
lazy path is what is tested.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import livemod
from livemod import _lazy_read


@pytest.fixture
def no_racy_window(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(_lazy_read, "RACY_NS", 0)
    yield


def make_package(root: Path) -> Path:
    pkg = root / "lazypkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text('__livemod__ = {"name": "lazypkg"}\n'
                                     "from . import used\n"
                                     "def later():\n"
                                     "    from . import later_sub\n"
                                     "    return later_sub.VALUE\n")
    (pkg / "used.py").write_text("VALUE = 'used'\n")
    (pkg / "later_sub.py").write_text("VALUE = 'original'\n")
    (pkg / "never.py").write_text("VALUE = 'never'\n")
    (pkg / "data.txt").write_text("not code\n")
    return pkg


def files_of(host: livemod.Host, name: str) -> object:
    private = host._table.names[name].private_name
    return sys.modules[private].__spec__.loader_state  # type: ignore[union-attr]


def test_only_the_files_imported_are_read(tmp_path: Path, no_racy_window: None) -> None:
    pkg = make_package(tmp_path)
    with livemod.Host() as host:
        host.insmod(pkg)
        files = files_of(host, "lazypkg")
        assert type(files) is _lazy_read.LazyFiles
        read = {os.path.basename(p) for p in files.read_paths()}
        assert read == {"__init__.py", "used.py"}
        assert host.namespace("lazypkg").later() == "original"
        assert "later_sub.py" in {os.path.basename(p) for p in files.read_paths()}
        assert str(pkg / "never.py") in files  # part of the package, never opened


@pytest.mark.parametrize("change", ["rewritten", "replaced-by-rename", "deleted"])
def test_a_file_changed_since_the_load_is_refused_not_run(
    tmp_path: Path, no_racy_window: None, change: str
) -> None:
    pkg = make_package(tmp_path)
    marker = tmp_path / "ran"
    evil = f"import pathlib\npathlib.Path({str(marker)!r}).write_text('x')\nVALUE = 'new'\n"
    with livemod.Host() as host:
        host.insmod(pkg)
        target = pkg / "later_sub.py"
        if change == "rewritten":
            target.write_text(evil)
        elif change == "replaced-by-rename":
            (pkg / "later_sub.py.new").write_text(evil)
            os.replace(pkg / "later_sub.py.new", target)
        else:
            target.unlink()
        what = "cannot be read" if change == "deleted" else "changed on disk since"
        with pytest.raises(ImportError, match=what) as caught:
            host.namespace("lazypkg").later()
        assert str(target) in str(caught.value) and "lazypkg" in str(caught.value)
        assert not marker.exists(), "a file changed since the load ran"
        if change != "deleted":  # an upgrade reads the new files
            host.replace("lazypkg")
            assert host.namespace("lazypkg").later() == "new"


def test_a_file_changed_just_before_the_load_is_read_at_once(tmp_path: Path) -> None:
    """Within the racy window a rewrite could keep size and timestamps: such a file is read
    when the load starts, and that is what runs."""
    pkg = make_package(tmp_path)
    with livemod.Host() as host:
        host.insmod(pkg)
        files = files_of(host, "lazypkg")
        assert str(pkg / "later_sub.py") in files.read_paths()  # type: ignore[attr-defined]
        (pkg / "later_sub.py").write_text("VALUE = 'new!!!!'\n")  # same size
        assert host.namespace("lazypkg").later() == "original"


@pytest.mark.parametrize("policy", ["warn"])
def test_with_signatures_every_file_is_read_up_front(tmp_path: Path, policy: str,
                                                     no_racy_window: None) -> None:
    pytest.importorskip("cryptography", reason="signatures need the sign extra "
                        "(cryptography), which has no wheel for free-threaded 3.13t")
    pkg = make_package(tmp_path)
    keys = tmp_path / "keys"
    keys.mkdir()
    with livemod.Host(signatures=policy, trusted_keys=keys) as host:  # type: ignore[arg-type]
        host.insmod(pkg)  # unsigned: taints under warn, loads
        files = files_of(host, "lazypkg")
        assert type(files) is not _lazy_read.LazyFiles
        assert files[str(pkg / "data.txt")] == b"not code\n"  # type: ignore[index]
