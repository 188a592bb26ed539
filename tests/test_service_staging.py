"""The prepare half of each service-wide operation in one host, then commit or abort --
in process, with real modules: abort leaves the host exactly as it was."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import livemod
from livemod.service import DesiredSet, ModuleSpec, read_desired, write_desired
from livemod.service._staging import current_specs, stage

MODULES = Path(__file__).parent / "fixtures" / "service"


@pytest.fixture
def host() -> livemod.Host:
    h = livemod.Host([MODULES], name="staging")
    h.insmod(MODULES / "greet_v1.py")
    yield h
    h.close()


def rows(host: livemod.Host) -> list[tuple[str, str, str]]:
    return [(r.name, r.version, r.state.name) for r in host.lsmod()]


def test_upgrade_staged_serves_v1_until_commit(host: livemod.Host) -> None:
    with host._life.op_lock:
        staged = stage(host, "upgrade", {"name": "greet", "path": str(MODULES / "greet_v2.py")})
        assert host.hook("greet")("a") == ["hello a from 1.0.0"]  # v2 staged, not serving
        assert [s.version for s in staged.after(current_specs(host))] == ["2.0.0"]
        staged.abort()
    assert rows(host) == [("greet", "1.0.0", "LIVE")]
    assert host.hook("greet")("b") == ["hello b from 1.0.0"]
    with host._life.op_lock:
        staged = stage(host, "upgrade", {"name": "greet", "path": str(MODULES / "greet_v2.py")})
        assert staged.commit()["version"] == "2.0.0"
    assert host.hook("greet")("c") == ["hello c from 2.0.0"]


def test_insmod_and_modprobe_staged_publish_nothing_until_commit(host: livemod.Host) -> None:
    for op, args in (("insmod", {"path": str(MODULES / "extra.py")}),
                     ("modprobe", {"name": "extra"})):
        with host._life.op_lock:
            staged = stage(host, op, args)
            assert host.hook("extra")() == []
            staged.abort()
        assert rows(host) == [("greet", "1.0.0", "LIVE")], op
    with host._life.op_lock:
        stage(host, "modprobe", {"name": "extra"}).commit()
    assert host.hook("extra")() == ["extra"]


def test_rmmod_staged_is_unpublished_and_abort_publishes_it_again(host: livemod.Host) -> None:
    with host._life.op_lock:
        staged = stage(host, "rmmod", {"name": "greet"})
        assert host.hook("greet")("x") == []  # prepared: taken down, waiting for commit
        assert staged.after(current_specs(host)) == []
        staged.abort()
    assert rows(host) == [("greet", "1.0.0", "LIVE")]
    assert host.hook("greet")("y") == ["hello y from 1.0.0"]
    with host._life.op_lock:
        stage(host, "rmmod", {"name": "greet"}).commit()
    assert rows(host) == []


def test_param_staged_and_aborted_gets_its_old_value(host: livemod.Host) -> None:
    with host._life.op_lock:
        staged = stage(host, "param", {"name": "greet", "key": "greeting", "value": "hey"})
        assert staged.after(current_specs(host))[0].params["greeting"] == "hey"
        staged.abort()
    assert host.hook("greet")("z") == ["hello z from 1.0.0"]


def test_a_failing_prepare_changes_nothing(host: livemod.Host) -> None:
    with host._life.op_lock:
        with pytest.raises(livemod.ParamError):
            stage(host, "param", {"name": "greet", "key": "nope", "value": "1"})
        with pytest.raises(livemod.ModuleNotFound):
            stage(host, "rmmod", {"name": "missing"})
        with pytest.raises(livemod.LivemodError, match="not a service-wide operation"):
            stage(host, "leaks", {})
    assert rows(host) == [("greet", "1.0.0", "LIVE")]


def test_desired_set_round_trip_and_bad_files(tmp_path: Path) -> None:
    path = str(tmp_path / "desired.json")
    assert read_desired(path, "web") == DesiredSet("web", 0)
    ds = DesiredSet("web", 3, (ModuleSpec("greet", "1.0.0", "/m/greet.py", "ab", {"x": 1}),),
                    "t1")
    write_desired(path, ds)
    assert read_desired(path, "web") == ds
    for text, message in (("[]", "not a JSON object"),
                          ('{"format": 1, "generation": -1, "modules": []}', "'generation'"),
                          ('{"format": 1, "generation": 1, "modules": [{"name": 1}]}',
                           "modules[0].name"),
                          ('{"generation": 1}', "'format'")):
        Path(path).write_text(text)
        with pytest.raises(livemod.DesiredSetError, match=re.escape(message)) as info:
            read_desired(path, "web")
        assert info.value.path == path and "nothing was changed" in str(info.value)
    Path(path).write_text(json.dumps({"format": 2, "livemod": "0.9", "generation": 1,
                                      "modules": []}))
    newer = re.escape("written by livemod 0.9 (format 2)")
    with pytest.raises(livemod.DesiredSetError, match=newer):
        read_desired(path, "web")
