"""Rollouts through etcd to workers that enforce signatures (issue 16): a compromised
engine can stop a rollout but cannot run code.

The workers trust one key. A module signed with it rolls out and commits everywhere; one
signed with another key, or put into the engine with no signature, is refused by the
canary's workers before any of its code runs (its body writes a marker file), the rollout
aborts and every machine keeps the version it had.
"""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import pytest

from etcd_support import EtcdServer, Machine, machines_at, requires_etcd, rollout, status
from service_support import wait_for

pytest.importorskip(
    "cryptography",
    reason="the sign extra (cryptography) is not installed: it has no wheel for free-threaded "
    "3.13t (pip install 'livemod[sign]' where it has one)",
)

from livemod.cli import main as cli
from livemod.etcd import EtcdClient
from livemod.etcd._files import put_file
from livemod.etcd._records import Keys

pytestmark = requires_etcd

EXIT_ROLLOUT = 24


def _sign(module: str | Path, key: Path) -> None:
    assert cli(["sign", str(module), "--key", str(key)]) == 0


def _evil(folder: Path, marker: Path, name: str) -> Path:
    """A greet 3.0.0 whose body writes ``marker``: if it exists, the module's code ran."""
    path = folder / name
    path.write_text(f"# {name}: distinct bytes, so a key of its own in the engine\n"
                    '__livemod__ = {"name": "greet", "version": "3.0.0"}\n'
                    "import pathlib\n"
                    f"pathlib.Path({str(marker)!r}).write_text('ran')\n\n\n"
                    "def init(mod):\n"
                    "    mod.hook('greet').add(lambda who: f'owned {who}')\n")
    return path


def _tamper_sig(etcd: EtcdServer, module: Path) -> None:
    """Put ``module`` (signed with the trusted key) into the engine, then flip a byte of
    its stored signature, as a compromised engine would; the rollout's own write of the
    same bytes then finds the key taken and leaves it."""
    client = EtcdClient(etcd.url)
    try:
        keys = Keys("/livemod", "web")
        key = keys.file(put_file(client, keys, str(module)))
        kv = client.get(key)
        assert kv is not None
        record = json.loads(kv.value)
        sig = json.loads(base64.b64decode(record["sig"]))
        raw = bytearray(base64.b64decode(sig["signature"]))
        raw[0] ^= 0xFF  # a well-formed .sig, by the trusted key's id, that does not verify
        sig["signature"] = base64.b64encode(bytes(raw)).decode()
        record["sig"] = base64.b64encode(json.dumps(sig).encode()).decode()
        client.put(key, json.dumps(record).encode())
    finally:
        client.close()


def _refused(etcd: EtcdServer, ms: list[Machine], module: Path, generation: int) -> str:
    r = rollout(etcd, "upgrade", "greet", str(module), "--batch", "100%")
    assert r.returncode == EXIT_ROLLOUT, (r.stdout, r.stderr)
    assert "batch 0 aborted" in r.stderr, r.stderr
    assert status(etcd)["rollout"]["state"] == "aborted"
    wait_for(lambda: machines_at(etcd, generation, len(ms)), 30,
             f"every machine idle at generation {generation}")
    for m in ms:
        assert m.greetings() == {"greet 1.0.0"}, (m.machine, m.log())
        assert set(m.generations().values()) == {generation}
    return r.stderr


def test_signed_modules_roll_out_and_a_compromised_engine_cannot_run_code(
        etcd: EtcdServer, machines: list[Machine], tmp_path: Path) -> None:
    key, other, trusted = tmp_path / "key", tmp_path / "other", tmp_path / "trusted"
    trusted.mkdir()
    assert cli(["keygen", str(key)]) == 0
    assert cli(["keygen", str(other)]) == 0
    shutil.copy(str(key) + ".pub", trusted / "key.pub")
    for i in range(2):
        m = Machine(etcd, f"m{i + 1}")
        machines.append(m)
        m.env["LIVEMOD_TEST_TRUSTED"] = str(trusted)
        for name in ("greet_v1.py", "greet_v2.py"):
            _sign(m.module(name), key)
        m.spawn("greet_v1.py")
        m.start_agent()
    ms = machines
    wait_for(lambda: machines_at(etcd, 0, 2), 30, "every machine to register")

    # Signed, but not by a trusted key: the canary refuses it, nothing ran anywhere.
    marker = tmp_path / "ran"
    untrusted = _evil(tmp_path, marker, "untrusted.py")
    _sign(untrusted, other)
    err = _refused(etcd, ms, untrusted, 0)
    assert "which is not trusted" in err, err
    assert not marker.exists()

    # No signature at all (an engine that dropped it): refused the same way.
    unsigned = _evil(tmp_path, marker, "unsigned.py")
    err = _refused(etcd, ms, unsigned, 0)
    assert "it is unsigned" in err, err
    assert not marker.exists()

    # Signed with the trusted key, but the engine's copy of the signature was altered.
    tampered = _evil(tmp_path, marker, "tampered.py")
    _sign(tampered, key)
    _tamper_sig(etcd, tampered)
    err = _refused(etcd, ms, tampered, 0)
    assert "its signature does not verify" in err, err
    assert not marker.exists()

    # Signed with the trusted key: commits on every machine.
    r = rollout(etcd, "upgrade", "greet", ms[0].module("greet_v2.py"), "--batch", "100%")
    assert r.returncode == 0, (r.stdout, r.stderr)
    st = status(etcd)
    assert st["rollout"]["state"] == "done"
    for m in ms:
        assert m.greetings() == {"greet 2.0.0"}, m.machine
        # Each refused rollout used a generation number of its own.
        assert set(m.generations().values()) == {st["desired"]["generation"]}
    assert not marker.exists()
