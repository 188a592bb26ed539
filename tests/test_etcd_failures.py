"""Rollouts when things fail, on a real etcd: a canary that refuses, an agent killed in the
middle of prepare, etcd stopped mid-rollout, an agent cut off from etcd while the store is
compacted, two operators at once, and bad input. Each machine is a private socket folder
with two worker processes and a ``livemod agent`` process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

from etcd_support import (
    LIVEMOD,
    EtcdServer,
    Machine,
    Proxy,
    machines_at,
    requires_etcd,
    rollout,
    status,
)
from livemod.etcd import EtcdClient
from livemod.service import file_hash
from service_support import wait_for

pytestmark = requires_etcd

EXIT_ENGINE, EXIT_ROLLOUT = 23, 24


def _start(etcd: EtcdServer, made: list[Machine], count: int, *,
           refuse: frozenset[str] = frozenset(),
           slow: float = 0.0, urls: dict[str, str] | None = None) -> list[Machine]:
    for i in range(count):
        name = f"m{i + 1}"
        m = Machine(etcd, name, url=(urls or {}).get(name))
        if slow:
            m.env["LIVEMOD_TEST_SLOW"] = str(slow)
        made.append(m)
        m.spawn("greet_v1.py", refuse=name in refuse)
        m.spawn("greet_v1.py")
        m.start_agent()
    wait_for(lambda: machines_at(etcd, 0, count), 30, "every machine to register")
    return made


def _versions(ms: list[Machine]) -> dict[str, set[str]]:
    return {m.machine: m.greetings() for m in ms}


def _background(etcd: EtcdServer, *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k != "LIVEMOD_SOCKET"}
    return subprocess.Popen([*LIVEMOD, "rollout", "--etcd", etcd.url, "--service", "web",
                             *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_a_refusing_canary_aborts_and_every_machine_keeps_the_old_version(
        etcd: EtcdServer, machines: list[Machine]) -> None:
    ms = _start(etcd, machines, 3, refuse={"m1"})
    r = rollout(etcd, "upgrade", "greet", ms[0].module("greet_v2.py"), "--batch", "2")
    assert r.returncode == EXIT_ROLLOUT, (r.stdout, r.stderr)
    assert "batch 0 aborted" in r.stderr and "every machine keeps generation 0" in r.stderr
    assert "machine m1: no:" in r.stderr and "LIVEMOD_TEST_REFUSE is set" in r.stderr
    assert _versions(ms) == {m.machine: {"greet 1.0.0"} for m in ms}
    st = status(etcd)
    assert st["rollout"]["state"] == "aborted"
    assert [b["machines"] for b in st["rollout"]["batches"]] == [["m1"]]  # m2, m3 never asked
    wait_for(lambda: machines_at(etcd, 0, 3), 20, "every machine idle at generation 0")
    # The machines' own workers are all at generation 0 and in step.
    assert all(set(m.generations().values()) == {0} for m in ms)


def test_an_agent_killed_mid_prepare_is_excluded_then_catches_up(
        etcd: EtcdServer, machines: list[Machine]) -> None:
    ms = _start(etcd, machines, 3, slow=2.0)
    proc = _background(etcd, "upgrade", "greet", ms[0].module("greet_slow.py"), "--batch",
                       "2", "--progress-deadline", "30")
    try:
        wait_for(lambda: (status(etcd)["machines"].get("m2") or {}).get("state")
                 == "preparing", 60, "m2 to prepare")
        ms[1].kill_agent()
        killed = time.monotonic()
        wait_for(lambda: "m2" not in status(etcd)["machines"], 20, "m2's lease to expire")
        noticed = time.monotonic() - killed
        out, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, (out, err)
    assert "batch 1: m2, m3: committed" in out and "(excluded: m2)" in out, out
    assert noticed < 3 * 3 + 2, noticed  # the lease is 3 s
    st = status(etcd)["rollout"]
    assert st["state"] == "done" and sorted(st["committed"]) == ["m1", "m3"]
    assert ms[0].greetings() == ms[2].greetings() == {"greet 3.0.0"}
    # m2's workers never switched; its new agent ends the orphaned prepare and catches up.
    assert ms[1].greetings() == {"greet 1.0.0"}
    ms[1].start_agent()
    try:
        wait_for(lambda: machines_at(etcd, 1, 3), 60, "m2 to catch up to generation 1")
    except AssertionError:
        raise AssertionError((status(etcd)["machines"], ms[1].log())) from None
    assert ms[1].greetings() == {"greet 3.0.0"}
    assert set(ms[1].generations().values()) == {1}


def test_etcd_stopped_mid_rollout_hosts_keep_serving_then_it_finishes(
        etcd: EtcdServer, machines: list[Machine]) -> None:
    ms = _start(etcd, machines, 3, slow=1.0)
    proc = _background(etcd, "upgrade", "greet", ms[0].module("greet_slow.py"), "--batch",
                       "1", "--progress-deadline", "60")
    try:
        wait_for(lambda: any(b.get("outcome") == "commit" for b in
                             (status(etcd)["rollout"] or {}).get("batches", ())),
                 60, "the canary to commit")
        wait_for(lambda: ms[0].greetings() == {"greet 3.0.0"}, 30, "the canary to switch")
        etcd.signal(signal.SIGSTOP)
        try:
            # Every worker keeps serving; a machine whose commit was under way finishes it
            # without the engine, one still prepared keeps serving the old version.
            wait_for(lambda: all(len(m.greetings()) == 1 for m in ms), 30,
                     "every machine to serve one version")
            versions = _versions(ms)
            assert versions["m1"] == {"greet 3.0.0"}, versions
            wait_for(lambda: all("engine: unreachable" in m.ok("status") for m in ms), 30,
                     "every agent to see the engine unreachable")
        finally:
            etcd.signal(signal.SIGCONT)
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, (out, err)
    wait_for(lambda: machines_at(etcd, 1, 3), 60, "every machine at generation 1")
    assert _versions(ms) == {m.machine: {"greet 3.0.0"} for m in ms}
    assert all("engine: reachable" in m.ok("status") for m in ms)


def test_an_agent_cut_off_while_the_store_is_compacted_rereads_and_catches_up(
        etcd: EtcdServer, machines: list[Machine]) -> None:
    proxy = Proxy(etcd.port)
    try:
        ms = _start(etcd, machines, 2, urls={"m1": proxy.url})
        proxy.cut()
        wait_for(lambda: "m1" not in status(etcd)["machines"], 20, "m1's lease to expire")
        wait_for(lambda: "engine: unreachable" in ms[0].ok("status"), 30, "m1 to notice")
        assert ms[0].greetings() == {"greet 1.0.0"}  # nothing unloaded while cut off
        r = rollout(etcd, "upgrade", "greet", ms[0].module("greet_v2.py"))
        assert r.returncode == 0, (r.stdout, r.stderr)
        assert "done on 1 machine(s)" in r.stdout
        client = EtcdClient(etcd.url)
        for i in range(20):
            client.put("/livemod/web/noise", str(i).encode())
        _, revision = client.range("/livemod/web/noise")
        client.compact(revision)
        proxy.restore()
        wait_for(lambda: machines_at(etcd, 1, 2), 60, "m1 to come back at generation 1")
        record = status(etcd)["machines"]["m1"]
        assert record["compactions"] >= 1, record
        assert ms[0].greetings() == {"greet 2.0.0"}
        assert "engine: reachable" in ms[0].ok("status")
    finally:
        proxy.close()


def test_two_operators_at_once_one_wins_and_the_other_is_told(
        etcd: EtcdServer, machines: list[Machine]) -> None:
    ms = _start(etcd, machines, 2, slow=2.0)
    first = _background(etcd, "upgrade", "greet", ms[0].module("greet_slow.py"))
    try:
        client = EtcdClient(etcd.url)
        wait_for(lambda: client.get("/livemod/web/lock") is not None, 30, "the first lock")
        second = rollout(etcd, "upgrade", "greet", ms[0].module("greet_v2.py"))
        out, err = first.communicate(timeout=90)
    finally:
        if first.poll() is None:
            first.kill()
            first.communicate()
    assert second.returncode == EXIT_ROLLOUT, (second.stdout, second.stderr)
    assert "another rollout holds the service's lock" in second.stderr
    assert first.returncode == 0, (out, err)
    assert _versions(ms) == {m.machine: {"greet 3.0.0"} for m in ms}
    assert status(etcd)["desired"]["generation"] == 1


def test_bad_input_is_refused_and_nothing_changes(etcd: EtcdServer,
                                                  machines: list[Machine]) -> None:
    ms = _start(etcd, machines, 2)
    v2 = ms[0].module("greet_v2.py")
    client = EtcdClient(etcd.url)
    r = rollout(etcd, "upgrade", "greet", v2, "--batch", "0")
    assert r.returncode == EXIT_ROLLOUT and "a batch needs at least one machine" in r.stderr
    r = rollout(etcd, "upgrade", "greet", v2, prefix="/nope")
    assert r.returncode == EXIT_ROLLOUT and "registered in etcd" in r.stderr
    assert "/nope/web/machines/" in r.stderr
    r = rollout(etcd, "upgrade", "greet", v2, prefix="bad prefix/")
    assert r.returncode == EXIT_ROLLOUT and "prefix" in r.stderr
    r = subprocess.run([*LIVEMOD, "rollout", "--etcd", "http://127.0.0.1:9", "--service",
                        "web", "upgrade", "greet", v2], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == EXIT_ENGINE and "did not answer" in r.stderr
    assert client.get("/livemod/web/desired") is None  # none of these wrote anything

    # A module file in the engine whose bytes do not match its hash: refused on the
    # machines, the canary aborts, nobody loads it.
    sha = file_hash(v2)
    client.put(f"/livemod/web/files/{sha}", json.dumps(
        {"format": 1, "name": "greet_v2.py", "data": "cHJpbnQoJ293bmVkJyk=",
         "sig": None}).encode())
    r = rollout(etcd, "upgrade", "greet", v2)
    assert r.returncode == EXIT_ROLLOUT, (r.stdout, r.stderr)
    assert "hashes to" in r.stderr and "not to its key" in r.stderr
    assert _versions(ms) == {m.machine: {"greet 1.0.0"} for m in ms}

    # A desired record written by a newer livemod: refused, unchanged.
    newer = json.dumps({"format": 99, "livemod": "9.0", "generation": 7}).encode()
    client.put("/livemod/web/desired", newer)
    r = rollout(etcd, "upgrade", "greet", v2)
    assert r.returncode == EXIT_ROLLOUT and "format 99" in r.stderr and "upgrade" in r.stderr
    assert client.get("/livemod/web/desired").value == newer  # type: ignore[union-attr]
    assert _versions(ms) == {m.machine: {"greet 1.0.0"} for m in ms}


def test_the_coordinator_dies_machines_abort_by_themselves_and_resume_finishes(
        etcd: EtcdServer, machines: list[Machine]) -> None:
    ms = _start(etcd, machines, 3, slow=1.0)
    proc = _background(etcd, "upgrade", "greet", ms[0].module("greet_slow.py"), "--batch",
                       "2", "--progress-deadline", "3", "--lock-ttl", "2")
    try:
        wait_for(lambda: (status(etcd)["machines"].get("m1") or {}).get("state")
                 == "preparing", 60, "the canary to prepare")
    finally:
        proc.kill()
        proc.communicate()
    client = EtcdClient(etcd.url)
    rid = status(etcd)["rollout"]["id"]
    # Nobody decides: the prepared canary writes abort itself after the deadline, and its
    # workers stay on the old version with everyone else.
    decision = wait_for(lambda: client.get(f"/livemod/web/decision/{rid}/0000"), 30,
                        "the canary's own abort")
    assert json.loads(decision.value)["by"] == "machine m1"
    wait_for(lambda: machines_at(etcd, 0, 3), 30, "every machine idle at generation 0")
    assert _versions(ms) == {m.machine: {"greet 1.0.0"} for m in ms}
    assert status(etcd)["rollout"]["state"] == "running"
    wait_for(lambda: client.get("/livemod/web/lock") is None, 20, "the dead lock to expire")

    r = rollout(etcd, "resume")
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert "batch 0: aborted while no coordinator ran (machine m1): retrying" in r.stdout
    assert "canary: m1: committed" in r.stdout and "m2, m3: committed" in r.stdout, r.stdout
    assert _versions(ms) == {m.machine: {"greet 3.0.0"} for m in ms}
    assert status(etcd)["rollout"]["state"] == "done"


def test_a_machine_changed_by_hand_is_reported_drifted_and_left_out(
        etcd: EtcdServer, machines: list[Machine]) -> None:
    ms = _start(etcd, machines, 2)
    worker = sorted(os.listdir(ms[1].folder))[0]
    assert worker.endswith(".sock")
    r = subprocess.run([*LIVEMOD, "--socket", os.path.join(ms[1].folder, worker), "param",
                        "greet", "greeting=hey"], env=ms[1].env, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    wait_for(lambda: "changed outside the service" in
             (status(etcd)["machines"]["m2"].get("drift") or ""), 30, "m2 to report drift")
    r = rollout(etcd, "upgrade", "greet", ms[0].module("greet_v2.py"))
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert "not moved: m2" in r.stdout and "done on 1 machine(s)" in r.stdout, r.stdout
    assert ms[0].greetings() == {"greet 2.0.0"}
    assert ms[1].greetings() == {"greet 1.0.0"}  # reported, not reverted
