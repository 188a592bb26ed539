"""Rollouts across machines on a real etcd: batches with a canary, undo, two operators."""

from __future__ import annotations

import json
from pathlib import Path

from etcd_support import EtcdServer, Machine, machines_at, requires_etcd, rollout, status
from service_support import wait_for

pytestmark = requires_etcd


def _machines(etcd: EtcdServer, made: list[Machine], count: int, workers: int = 2
              ) -> list[Machine]:
    for i in range(count):
        m = Machine(etcd, f"m{i + 1}")
        made.append(m)
        for _ in range(workers):
            m.spawn("greet_v1.py")
        m.start_agent()
    wait_for(lambda: machines_at(etcd, 0, count), 30, "every machine to register")
    return made


def test_rollout_with_a_canary_then_undo(etcd: EtcdServer, machines: list[Machine]) -> None:
    ms = _machines(etcd, machines, 3)
    r = rollout(etcd, "upgrade", "greet", ms[0].module("greet_v2.py"), "--batch", "2")
    assert r.returncode == 0, (r.stdout, r.stderr)
    lines = r.stdout.splitlines()
    assert lines[0].startswith("generation 1: upgrade greet 2.0.0"), lines
    assert lines[1].startswith("canary: m1: committed"), lines
    assert lines[2].startswith("batch 1: m2, m3: committed"), lines
    assert "done on 3 machine(s)" in lines[3], lines
    for m in ms:
        assert m.greetings() == {"greet 2.0.0"}
        assert set(m.generations().values()) == {1}
    r = rollout(etcd, "status", "--json")
    assert r.returncode == 0, r.stderr
    st = json.loads(r.stdout)
    assert st["rollout"]["state"] == "done" and st["desired"]["generation"] == 1
    table = rollout(etcd, "status").stdout
    assert "generation 1 (from 0): upgrade greet" in table and "batch 1: m2, m3: commit" in table
    assert sum(line.split()[1:3] == ["1", "idle"] for line in table.splitlines()[4:]) == 3
    assert [b["outcome"] for b in st["rollout"]["batches"]] == ["commit", "commit"]

    r = rollout(etcd, "undo", "--batch", "100%")
    assert r.returncode == 0, (r.stdout, r.stderr)
    for m in ms:
        assert m.greetings() == {"greet 1.0.0"}
        assert set(m.generations().values()) == {2}
    assert status(etcd)["desired"]["change"]["op"] == "upgrade"


def test_apply_a_desired_toml_rolls_out_the_one_change_it_asks_for(
        etcd: EtcdServer, machines: list[Machine], tmp_path: Path) -> None:
    ms = _machines(etcd, machines, 2, workers=1)
    desired = tmp_path / "desired.toml"
    desired.write_text(f'[[module]]\npath = "{ms[0].module("greet_v2.py")}"\n')
    r = rollout(etcd, "apply", str(desired), "--canary", "0", "--batch", "100%")
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert "upgrade greet 2.0.0" in r.stdout
    assert {m.machine: m.greetings() for m in ms} == {"m1": {"greet 2.0.0"},
                                                       "m2": {"greet 2.0.0"}}
    r = rollout(etcd, "apply", str(desired))
    assert r.returncode == 24 and "asks for nothing new" in r.stderr
    desired.write_text(f'[[module]]\npath = "{ms[0].module("greet_v1.py")}"\n'
                       f'params = {{ greeting = "hi" }}\n'
                       f'[[module]]\npath = "{ms[0].module("extra.py")}"\n')
    r = rollout(etcd, "apply", str(desired))
    assert r.returncode == 24 and "asks for 2 changes" in r.stderr, r.stderr
    assert "  upgrade greet" in r.stderr and "  insmod " in r.stderr
    assert status(etcd)["desired"]["generation"] == 1  # nothing was written
