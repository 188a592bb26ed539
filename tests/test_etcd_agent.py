"""The agent embedded in a process, etcd authentication, and the desired record's
compare-and-swap, against a real etcd started by the test."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from etcd_support import EtcdServer, Machine, machines_at, requires_etcd, status
from livemod import RolloutError
from livemod.etcd import Agent, EngineError, EtcdClient, Options, Rollout
from livemod.service import ModuleSpec
from service_support import wait_for

pytestmark = requires_etcd


@pytest.fixture
def machine(etcd: EtcdServer) -> Iterator[Machine]:
    m = Machine(etcd, "m1")
    m.spawn("greet_v1.py")
    yield m
    m.stop()


def test_an_embedded_agent_registers_reports_and_deregisters(
        etcd: EtcdServer, machine: Machine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", machine.runtime)  # this process is "on" m1
    client = EtcdClient(etcd.url)
    agent = Agent(client, "web", "m1", ttl=3, tick=0.5).start()
    try:
        wait_for(lambda: machines_at(etcd, 0, 1), 20, "the embedded agent to register")
        record = status(etcd)["machines"]["m1"]
        assert record["engine"] == "reachable" and len(record["workers"]) == 1
        assert [m["name"] for m in record["modules"]] == ["greet"]
        assert agent.status()["machine"] == "m1"
        # Its workers' files went into the engine by hash (undo of a first rollout needs
        # them); the key is the sha256 the record names.
        sha = record["modules"][0]["sha256"]
        assert client.get(f"/livemod/web/files/{sha}") is not None
    finally:
        agent.stop()
    assert status(etcd)["machines"] == {}  # revoked at once, not after the TTL
    assert machine.greetings() == {"greet 1.0.0"}  # the workers keep running


def test_the_desired_record_is_compare_and_swapped(etcd: EtcdServer, machine: Machine) -> None:
    machine.start_agent()
    try:
        wait_for(lambda: machines_at(etcd, 0, 1), 20, "the agent")
    except AssertionError:
        raise AssertionError((status(etcd), machine.log())) from None
    ro = Rollout(EtcdClient(etcd.url), "web")
    stale_desired, stale_rollout = ro.read()  # what a slow operator read
    ro.start("upgrade", Options(), name="greet", path=machine.module("greet_v2.py"))
    base = (ModuleSpec("greet", "1.0.0", "greet_v1.py", "x"),)
    with pytest.raises(RolloutError, match="another operator changed service web first"):
        ro._write_and_run(stale_desired, stale_rollout, {"op": "rmmod", "name": "greet"}, 0,
                          base, (), 1, Options(), history_base=False)
    assert status(etcd)["desired"]["change"]["op"] == "upgrade"  # the first one stands
    assert machine.greetings() == {"greet 2.0.0"}


def test_etcd_authentication_is_passed_through(etcd: EtcdServer) -> None:
    def ctl(*args: str) -> None:
        subprocess.run(["etcdctl", "--endpoints", etcd.url, *args], check=True,
                       capture_output=True, timeout=30,
                       env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"})

    ctl("user", "add", "root:s3cret")
    ctl("auth", "enable")
    good = EtcdClient(etcd.url, user="root", password="s3cret")
    good.put("/auth/k", b"v")
    assert good.get("/auth/k").value == b"v"  # type: ignore[union-attr]
    with pytest.raises(EngineError, match=r"user name is empty|permission denied"):
        EtcdClient(etcd.url).get("/auth/k")
    with pytest.raises(EngineError, match="authentication failed"):
        EtcdClient(etcd.url, user="root", password="wrong").get("/auth/k")
