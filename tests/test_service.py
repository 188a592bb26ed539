"""All the workers of a service, all or nothing: real worker processes, the real CLI."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator

import pytest

import livemod
from livemod.cli import EXIT_CODES
from livemod.service import Coordinator, read_decision, read_desired
from service_support import Service, wait_for


def _code(name: str) -> int:
    return next(code for cls, code in EXIT_CODES.items() if cls.__name__ == name)


@pytest.fixture
def svc() -> Iterator[Service]:
    service = Service("web")
    yield service
    service.stop()


def test_upgrade_every_worker_then_new_workers_follow(svc: Service) -> None:
    workers = [svc.spawn("greet_v1.py") for _ in range(3)]
    pids = sorted(p.pid for p in workers)
    table = svc.ok("lsmod").splitlines()
    assert table[0].split() == ["Module", *(w for p in pids for w in ("pid", str(p)))]
    assert table[1].split() == ["greet", *["1.0.0", "LIVE"] * 3]

    out = svc.ok("upgrade", "greet", svc.module("greet_v2.py"))
    assert "committed in 3 worker(s), generation 1" in out
    assert set(map(tuple, svc.versions().values())) == {("greet 2.0.0",)}
    assert set(svc.generations().values()) == {1}
    desired = read_desired(os.path.join(svc.folder, "desired.json"), "web")
    assert desired.generation == 1 and [m.version for m in desired.modules] == ["2.0.0"]

    # A worker started now (its start-up set says v1) comes up at generation 1, on v2.
    late = svc.spawn("greet_v1.py")
    assert svc.versions()[late.pid] == ["greet 2.0.0"]
    assert svc.generations()[late.pid] == 1

    # insmod, param and rmmod across the service; each is one generation.
    svc.ok("insmod", svc.module("extra.py"))
    assert set(map(tuple, svc.versions().values())) == {("greet 2.0.0", "extra 1.0.0")}
    svc.ok("param", "greet", "greeting=hey")
    values = svc.json("param", "greet")
    assert {v["greeting"]["value"] for v in values.values()} == {"hey"}
    svc.ok("rmmod", "extra")
    assert set(map(tuple, svc.versions().values())) == {("greet 2.0.0",)}
    svc.ok("modprobe", "extra")  # by name, from each worker's modpath
    assert set(map(tuple, svc.versions().values())) == {("greet 2.0.0", "extra 1.0.0")}
    assert set(svc.generations().values()) == {5}
    status = svc.ok("status")
    assert status.count("in step") == 4, status


def test_one_worker_refusing_aborts_everywhere_and_is_named(svc: Service) -> None:
    good = [svc.spawn("greet_v1.py") for _ in range(2)]
    bad = svc.spawn("greet_v1.py", refuse=True)
    r = svc.cli("upgrade", "greet", svc.module("greet_v2.py"))
    assert r.returncode == _code("TransactionAborted"), (r.stdout, r.stderr)
    assert f"pid {bad.pid}: no: module 'greet' failed to load" in r.stderr, r.stderr
    assert "LIVEMOD_TEST_REFUSE is set" in r.stderr
    for proc in good:
        assert f"pid {proc.pid}: yes" in r.stderr
    # Nobody switched; every worker keeps generation 0 and serves v1.
    assert set(map(tuple, svc.versions().values())) == {("greet 1.0.0",)}
    assert set(svc.generations().values()) == {0}
    assert not os.path.exists(os.path.join(svc.folder, "desired.json"))


def stop(pid: int) -> None:
    """SIGSTOP ``pid`` and wait until it is stopped: the kernel stops a process's threads
    asynchronously, and one still running could answer a vote first."""

    def state() -> str:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]

    os.kill(pid, signal.SIGSTOP)
    wait_for(lambda: state() == "T", what=f"pid {pid} to be stopped")


def test_a_stopped_worker_aborts_after_the_timeout(svc: Service) -> None:
    workers = [svc.spawn("greet_v1.py") for _ in range(3)]
    stopped = workers[1]
    stop(stopped.pid)
    try:
        r = svc.cli("upgrade", "--timeout", "2", "greet", svc.module("greet_v2.py"))
    finally:
        os.kill(stopped.pid, signal.SIGCONT)
    # begin() asks every worker first: the stopped one is named before anything changed.
    assert r.returncode == _code("TransactionAborted"), (r.stdout, r.stderr)
    assert f"pid {stopped.pid}" in r.stderr and "nothing was changed" in r.stderr, r.stderr
    assert set(map(tuple, svc.versions().values())) == {("greet 1.0.0",)}


def test_stopped_during_prepare_aborts_everyone_keeps_v1(svc: Service) -> None:
    workers = [svc.spawn("greet_v1.py") for _ in range(3)]
    stopped = workers[2]
    coordinator = Coordinator("web", vote_timeout=2.0)
    os.environ["XDG_RUNTIME_DIR"], saved = svc.runtime, os.environ.get("XDG_RUNTIME_DIR")
    try:
        t = coordinator.begin("upgrade", {"name": "greet", "path": svc.module("greet_v2.py")})
        stop(stopped.pid)  # after begin: it stops during prepare
        try:
            with pytest.raises(livemod.TransactionAborted) as info:
                coordinator.prepare(t)
                decision = coordinator.decide(t)
                coordinator.finish(t, decision)
                if decision.outcome != "commit":
                    raise livemod.TransactionAborted(decision.reason,
                                                     votes=tuple(v.describe() for v in t.votes))
        finally:
            os.kill(stopped.pid, signal.SIGCONT)
        assert f"pid {stopped.pid}: no: did not answer within 2s" in str(info.value)
        # The stopped worker, resumed, finishes its prepare, reads the abort and rolls back.
        wait_for(lambda: all(st["service"]["txn"] is None
                             for st in svc.json("status")["workers"].values()),
                 what="every worker leaving the transaction")
        assert set(map(tuple, svc.versions().values())) == {("greet 1.0.0",)}
        assert set(svc.generations().values()) == {0}
    finally:
        if saved is None:
            del os.environ["XDG_RUNTIME_DIR"]
        else:
            os.environ["XDG_RUNTIME_DIR"] = saved


def test_prepared_workers_carry_out_the_recorded_decision_alone(svc: Service) -> None:
    """The coordinator records commit and dies before telling anyone: the workers read
    the decision themselves. Then one whose coordinator never decides aborts by itself."""
    [svc.spawn("greet_v1.py") for _ in range(2)]
    os.environ["XDG_RUNTIME_DIR"], saved = svc.runtime, os.environ.get("XDG_RUNTIME_DIR")
    try:
        c = Coordinator("web", vote_timeout=10.0, hold=1.5)
        t = c.begin("upgrade", {"name": "greet", "path": svc.module("greet_v2.py")})
        assert all(v.ok for v in c.prepare(t))
        assert c.decide(t).outcome == "commit"  # ... and no finish(): nobody is told
        wait_for(lambda: set(svc.generations().values()) == {1}, what="commit by themselves")
        assert set(map(tuple, svc.versions().values())) == {("greet 2.0.0",)}

        t = c.begin("param", {"name": "greet", "key": "greeting", "value": "yo"})
        assert all(v.ok for v in c.prepare(t))  # no decision at all: past hold, abort
        wait_for(lambda: read_decision(c.decisions, t.txn, "web") is not None,
                 what="a worker recording the abort")
        decision = read_decision(c.decisions, t.txn, "web")
        assert decision is not None and decision.outcome == "abort"
        assert decision.by.startswith("worker "), decision
        # The coordinator, late, cannot overturn it: the decision is written once.
        assert c.decide(t).outcome == "abort"
        wait_for(lambda: {v["greeting"]["value"] for v in svc.json("param", "greet").values()}
                 == {"hello"}, what="the old value back")
        # The value prepare set and abort took back is not drift.
        assert svc.ok("status").count("in step") == 2, svc.ok("status")
    finally:
        if saved is None:
            del os.environ["XDG_RUNTIME_DIR"]
        else:
            os.environ["XDG_RUNTIME_DIR"] = saved


def test_dead_workers_are_dropped_and_their_sockets_cleaned(svc: Service) -> None:
    workers = [svc.spawn("greet_v1.py") for _ in range(3)]
    dead = workers[0]
    dead.kill()
    dead.wait(5)
    assert os.path.exists(os.path.join(svc.folder, f"{dead.pid}.sock"))
    r = svc.cli("lsmod")
    assert r.returncode == 0 and f"removed stale sockets of dead pids {dead.pid}" in r.stderr
    assert not os.path.exists(os.path.join(svc.folder, f"{dead.pid}.sock"))
    assert sorted(svc.versions()) == sorted(w.pid for w in workers[1:])


def test_bad_input_changes_nothing(svc: Service) -> None:
    r = svc.cli("upgrade", "greet", svc.module("greet_v2.py"))
    assert r.returncode == _code("HostUnreachable"), r.stderr
    assert "service 'web' has no running worker" in r.stderr

    [svc.spawn("greet_v1.py") for _ in range(2)]
    desired = os.path.join(svc.folder, "desired.json")
    with open(desired, "w") as f:
        f.write("{not json")
    r = svc.cli("upgrade", "greet", svc.module("greet_v2.py"))
    assert r.returncode == _code("DesiredSetError"), r.stderr
    assert f"desired set {desired}: not valid JSON" in r.stderr
    with open(desired, "w") as f:
        json.dump({"format": 99, "livemod": "9.0", "generation": 1, "modules": []}, f)
    r = svc.cli("upgrade", "greet", svc.module("greet_v2.py"))
    assert r.returncode == _code("DesiredSetError"), r.stderr
    assert "written by livemod 9.0 (format 99)" in r.stderr and "upgrade livemod" in r.stderr
    # The workers said so too, and kept what they run.
    status = svc.json("status")["workers"]
    assert all("unreadable" in str(s["service"]["desired_generation"]) for s in status.values())
    assert set(map(tuple, svc.versions().values())) == {("greet 1.0.0",)}
    os.unlink(desired)
    # Each worker notices on its next look at the file (every _POLL seconds), not at once:
    # an upgrade before that is refused, rightly ("wait for them to reconcile").
    def in_step() -> bool:
        return not any(s["service"]["drifted"] for s in svc.json("status")["workers"].values())

    wait_for(in_step, what="every worker back in step once the unreadable desired set is gone")

    # Workers at different generations: refused before anything changes.
    svc.ok("upgrade", "greet", svc.module("greet_v2.py"))
    refusing = svc.spawn("greet_v1.py", refuse=True)  # cannot reconcile to v2
    status = svc.ok("status")
    assert "drifted" in status and "refuses v2" in status, status
    r = svc.cli("param", "greet", "greeting=hi")
    assert r.returncode == _code("TransactionAborted"), r.stderr
    assert f"pid {refusing.pid}: generation 0 (drifted" in r.stderr
    assert "nothing was changed" in r.stderr
    assert {v["greeting"]["value"] for v in svc.json("param", "greet").values()} == {"hello"}
    # A param the module refuses nowhere, but one worker is drifted: still nothing done,
    # and the workers that took part in nothing are not marked drifted by it.
    assert svc.ok("status").count("in step") == 2


def test_commands_without_a_service_form_say_so(svc: Service) -> None:
    svc.spawn("greet_v1.py")
    r = svc.cli("log")
    assert r.returncode == 1 and "log has no --service form" in r.stderr


def test_a_worker_dying_before_it_votes_is_dropped(svc: Service,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    workers = [svc.spawn("greet_v1.py") for _ in range(3)]
    monkeypatch.setenv("XDG_RUNTIME_DIR", svc.runtime)
    c = Coordinator("web")
    t = c.begin("upgrade", {"name": "greet", "path": svc.module("greet_v2.py")})
    workers[0].kill()
    workers[0].wait(5)
    votes = {v.pid: v for v in c.prepare(t)}
    assert votes[workers[0].pid].dropped and "died" in votes[workers[0].pid].describe()
    outcome = c.finish(t, c.decide(t))
    assert outcome.outcome == "commit" and sorted(outcome.results) == sorted(
        w.pid for w in workers[1:])
    assert set(map(tuple, svc.versions().values())) == {("greet 2.0.0",)}
    # Its replacement follows the desired set.
    replacement = svc.spawn("greet_v1.py")
    assert svc.versions()[replacement.pid] == ["greet 2.0.0"]
