"""Load on demand, as the kernel's request_module: alias patterns, ``host.request`` and
``mod.require`` loading from the modpath."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import livemod
from livemod.config import parse_config


def _module(folder: Path, name: str, *, aliases: tuple[str, ...] = (), body: str = "") -> None:
    (folder / f"{name}.py").write_text(
        f"__livemod__ = {{'name': {name!r}, 'version': '1.0', 'aliases': {list(aliases)!r}}}\n"
        + body)


@pytest.fixture
def codecs(tmp_path: Path) -> Path:
    _module(tmp_path, "anyimage", aliases=("codec:image/*",))
    _module(tmp_path, "png", aliases=("codec:image/png",))
    _module(tmp_path, "pngish", aliases=("codec:image/pn?",))
    _module(tmp_path, "fallback", aliases=("codec:*",))
    _module(tmp_path, "video", aliases=("codec:video/[mw]*",))
    return tmp_path


def test_request_prefers_name_then_alias_then_the_most_specific_pattern(codecs: Path) -> None:
    with livemod.Host([codecs]) as host:
        assert host.request("codec:image/png").name == "png"        # an exact alias
        assert host.request("codec:image/pnm").name == "pngish"     # 14 literal chars
        assert host.request("codec:image/jpeg").name == "anyimage"  # beats codec:*
        assert host.request("codec:audio/ogg").name == "fallback"
        assert host.request("codec:video/webm").name == "video"
        assert host.request("fallback").name == "fallback"           # a module name
        assert [s.name for s in host.lsmod()] == ["png", "pngish", "anyimage", "fallback",
                                                  "video"]
        # A pattern of a loaded module answers too, without a new load.
        assert host.request("codec:image/gif").name == "anyimage"


def test_request_respects_the_blacklist_and_names_what_it_knows(codecs: Path) -> None:
    config = parse_config('blacklist = ["anyimage"]\n', path=str(codecs / "livemod.toml"))
    with livemod.Host([codecs], config=config) as host:
        assert host.request("codec:image/jpeg").name == "fallback"  # anyimage is banned
        with pytest.raises(livemod.ModuleNotFound, match="blacklisted"):
            host.request("anyimage")
    with livemod.Host([codecs]) as host:
        with pytest.raises(livemod.ModuleNotFound) as missing:
            host.request("font:ttf")
        message = str(missing.value)
        assert "no module, alias or alias pattern matches 'font:ttf'" in message
        assert "codec:image/* (anyimage)" in message and host.lsmod() == []


def test_a_bad_alias_pattern_is_a_clear_manifest_error(tmp_path: Path) -> None:
    _module(tmp_path, "bad", aliases=("codec:[image/*",))
    with livemod.Host([tmp_path]) as host, pytest.raises(
            livemod.ManifestError, match=r"alias pattern 'codec:\[image/\*' has an unclosed"):
        host.insmod(tmp_path / "bad.py")


def test_depmod_indexes_the_patterns(codecs: Path) -> None:
    with livemod.Host([codecs]) as host:
        host.depmod()
    index = json.loads((codecs / ".livemod-depmod.json").read_text())
    assert "codec:image/*" in json.dumps(index)
    # A fresh host answers from the saved index.
    with livemod.Host([codecs]) as host:
        assert host.request("codec:image/tiff").name == "anyimage"


def test_require_loads_from_the_modpath_unless_autoload_is_off(tmp_path: Path) -> None:
    _module(tmp_path, "log", body="def init(mod):\n    mod.export('write', print)\n")
    _module(tmp_path, "user", body="def init(mod):\n    mod.export('log', mod.require('log'))\n")
    _module(tmp_path, "lost", body="def init(mod):\n    mod.require('nowhere')\n")
    with livemod.Host([tmp_path]) as host:
        host.insmod(tmp_path / "user.py")  # log is not declared, nor loaded
        rows = {s.name: s.used_by for s in host.lsmod()}
        assert rows == {"log": ("user",), "user": ()}
        with pytest.raises(livemod.InitError) as failed:
            host.insmod(tmp_path / "lost.py")
        cause = failed.value.__cause__
        assert isinstance(cause, livemod.DependencyError)
        assert "'nowhere', which is neither loaded nor on the modpath" in str(cause)
    with livemod.Host([tmp_path], autoload=False) as host:
        with pytest.raises(livemod.InitError) as failed:
            host.insmod(tmp_path / "user.py")
        assert isinstance(failed.value.__cause__, livemod.DependencyError)
        assert host.lsmod() == []
