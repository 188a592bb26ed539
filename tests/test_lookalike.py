"""A look-alike name (one Python's NFKC normalisation reads as another) means that other
name everywhere it is compared: loaded modules (test_host), manifests (test_manifest), and
here the configuration's blacklist, for ``modprobe -n`` and ``request`` too."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import livemod
from livemod.config import parse_config

pytestmark = pytest.mark.usefixtures("no_stray_threads")

LOOKALIKE = "\uff47reet"  # a fullwidth g: Python reads it as 'greet'


@pytest.fixture
def host(tmp_path: Path) -> Iterator[livemod.Host]:
    (tmp_path / "greet.py").write_text('__livemod__ = {"name": "greet"}\n')
    config = parse_config('blacklist = ["greet"]\n', path=str(tmp_path / "livemod.toml"))
    h = livemod.Host(modpath=[tmp_path], config=config)
    yield h
    h.close()


@pytest.mark.parametrize("name", ["greet", LOOKALIKE])
def test_a_blacklisted_name_is_refused_by_its_look_alike_too(
    host: livemod.Host, name: str
) -> None:
    with pytest.raises(livemod.ModuleNotFound, match="blacklisted"):
        host.modprobe(name)
    with pytest.raises(livemod.ModuleNotFound, match="blacklisted"):
        host.modprobe_plan(name)  # what modprobe -n shows: the same refusal
    with pytest.raises(livemod.ModuleNotFound, match="blacklisted"):
        host.request(name)
    assert host.lsmod() == []
