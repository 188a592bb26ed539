"""Under ``signatures="enforce"``, depmod and the modinfo lookups check a module's signature
before they parse its manifest, as a load does (livemod._depmod_entry's precheck).

The hostile module's manifest is over a limit: parsing it at all would raise a
ManifestError naming the limit, so a SignatureError instead shows the check came first.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import livemod
from livemod.cli import main as cli

pytest.importorskip(
    "cryptography",
    reason="the sign extra (cryptography) is not installed: it has no wheel for free-threaded "
    "3.13t (pip install 'livemod[sign]' where it has one)",
)

pytestmark = pytest.mark.usefixtures("no_stray_threads")

ALIASES = ", ".join(f'"a{i}"' for i in range(5000))


@pytest.fixture
def mods(tmp_path: Path) -> Path:
    folder = tmp_path / "mods"
    folder.mkdir()
    (folder / "hostile.py").write_text(
        f'__livemod__ = {{"name": "hostile", "aliases": [{ALIASES}]}}\n')
    (folder / "good.py").write_text('__livemod__ = {"name": "good", "aliases": ["fine"]}\n')
    (folder / "plain.py").write_text('__livemod__ = {"name": "plain", "aliases": ["pl"]}\n')
    return folder


@pytest.fixture
def key(tmp_path: Path) -> Path:
    key = tmp_path / "key"
    assert cli(["keygen", str(key)]) == 0
    (tmp_path / "trusted").mkdir()
    shutil.copy(str(key) + ".pub", tmp_path / "trusted" / "key.pub")
    return key


def sign(module: Path, key: Path) -> None:
    assert cli(["sign", str(module), "--key", str(key)]) == 0


@pytest.fixture
def make_host(mods: Path, key: Path) -> Iterator[Callable[..., livemod.Host]]:
    made: list[livemod.Host] = []

    def make(policy: str = "enforce") -> livemod.Host:
        made.append(livemod.Host(modpath=[mods], signatures=policy,  # type: ignore[arg-type]
                                 trusted_keys=key.parent / "trusted", timeout=2.0))
        return made[-1]

    yield make
    for host in made:
        host.close(timeout=2.0)


def broken(host: livemod.Host) -> dict[str, str]:
    return {Path(path).name: why for path, why in host.depmod().broken}


def test_depmod_refuses_an_unsigned_module_before_parsing_it(
    make_host: Callable[..., livemod.Host], mods: Path, key: Path
) -> None:
    sign(mods / "good.py", key)
    enforce = make_host("enforce")
    why = broken(enforce)
    assert why["hostile.py"].startswith("SignatureError:"), why
    assert "unsigned" in why["hostile.py"] and str(mods / "hostile.py") in why["hostile.py"]
    assert [m.name for m in enforce.depmod().modules] == ["good"]
    # Without enforcement the same file is parsed, and refused for its manifest.
    assert "limit aliases" in broken(make_host("off"))["hostile.py"]


def test_modinfo_of_an_unsigned_file_is_refused_before_parsing(
    make_host: Callable[..., livemod.Host], mods: Path
) -> None:
    host = make_host("enforce")
    with pytest.raises(livemod.SignatureError, match="unsigned") as by_path:
        host.modinfo(str(mods / "hostile.py"))
    assert str(mods / "hostile.py") in str(by_path.value)
    with pytest.raises(livemod.SignatureError, match="unsigned") as by_name:
        host.modinfo("hostile")
    assert str(mods / "hostile.py") in str(by_name.value)
    with pytest.raises(livemod.SignatureError, match="unsigned"):
        host.modprobe("hostile")
    assert host.lsmod() == []
    with pytest.raises(livemod.ManifestError, match="limit aliases"):
        make_host("off").modinfo("hostile")


def test_an_unsigned_module_is_not_found_by_its_alias(
    make_host: Callable[..., livemod.Host], mods: Path, key: Path
) -> None:
    sign(mods / "good.py", key)
    host = make_host("enforce")
    assert host.modinfo("fine").name == "good"
    with pytest.raises(livemod.ModuleNotFound):
        host.modinfo("pl")  # plain.py is unsigned: never parsed, so its aliases are unknown
    assert make_host("off").modinfo("pl").name == "plain"


def test_signing_a_module_later_is_seen_by_the_index(
    make_host: Callable[..., livemod.Host], mods: Path, key: Path
) -> None:
    host = make_host("enforce")
    with pytest.raises(livemod.SignatureError):
        host.modinfo("plain")
    sign(mods / "plain.py", key)  # the module's own files are untouched: only its .sig
    assert host.modinfo("plain").name == "plain"
    assert host.modinfo("pl").name == "plain"
    (mods / "plain.py.sig").unlink()
    with pytest.raises(livemod.SignatureError):
        host.modinfo("plain")


def test_a_saved_index_is_read_again_under_the_other_policy(
    make_host: Callable[..., livemod.Host], mods: Path
) -> None:
    off = make_host("off")
    off.depmod()  # saves .livemod-depmod.json with plain's manifest, read unsigned
    assert (mods / ".livemod-depmod.json").exists()
    enforce = make_host("enforce")
    with pytest.raises(livemod.SignatureError):
        enforce.modinfo("plain")
    with pytest.raises(livemod.ModuleNotFound):
        enforce.modinfo("pl")
    enforce.depmod()  # saves the refusals
    later = make_host("off")  # an index made under enforce says nothing to another policy
    assert later.modinfo("pl").name == "plain"
    assert "limit aliases" in broken(later)["hostile.py"]


def test_a_signed_package_is_found_and_its_edit_is_refused(
    make_host: Callable[..., livemod.Host], mods: Path, key: Path, probe: Any
) -> None:
    pkg = mods / "bundle"
    pkg.mkdir()
    (pkg / "__init__.py").write_text('__livemod__ = {"name": "bundle"}\n')
    (pkg / "data.txt").write_text("data\n")
    sign(pkg, key)
    host = make_host("enforce")
    assert host.modinfo("bundle").name == "bundle"
    (pkg / "data.txt").write_text("other data\n")
    with pytest.raises(livemod.SignatureError, match=r"changed: data\.txt"):
        host.modinfo("bundle")
