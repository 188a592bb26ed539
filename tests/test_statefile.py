"""The state file: written atomically on every change, restored after a restart."""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import livemod
from livemod._statefile import FORMAT_VERSION, StateFile

ALPHA = '''\
"""Alpha: every param type."""
__livemod__ = {
    "name": "alpha", "version": "1.0.0", "aliases": ["first"],
    "params": {
        "n": {"type": "int", "default": 0, "writable": True},
        "label": {"type": "str", "default": "", "writable": True},
        "ratio": {"type": "float", "default": 0.5, "writable": True},
        "on": {"type": "bool", "default": False},
        "tags": {"type": "list", "default": ["x"], "writable": True},
    },
}
'''
BETA = '''\
"""Beta: depends on alpha through its alias."""
__livemod__ = {"name": "beta", "version": "1.0.0", "depends": ["first"]}
'''
GAMMA = '''\
"""Gamma: requires beta at init (an edge the manifest does not declare)."""
__livemod__ = {"name": "gamma", "version": "1.0.0",
               "params": {"word": {"type": "str", "default": "hi"}}}

def init(mod):
    mod.require("beta")
'''
BROKEN = '''\
"""Fails in init."""
__livemod__ = {"name": "broken", "version": "1.0.0"}

def init(mod):
    raise RuntimeError("no database")
'''


@pytest.fixture
def mods(tmp_path: Path) -> Path:
    folder = tmp_path / "mods"
    folder.mkdir()
    for name, text in (("alpha", ALPHA), ("beta", BETA), ("gamma", GAMMA),
                       ("broken", BROKEN)):
        (folder / f"{name}.py").write_text(text)
    return folder


@pytest.fixture
def new_host(mods: Path) -> Iterator[Callable[..., livemod.Host]]:
    hosts: list[livemod.Host] = []

    def make(**kwargs: Any) -> livemod.Host:
        hosts.append(livemod.Host(modpath=[mods], **kwargs))
        return hosts[-1]

    yield make
    for host in hosts:
        host.close(timeout=2.0)


def saved(path: Path) -> list[tuple[str, dict[str, Any]]]:
    data = json.loads(path.read_text())
    assert data["format"] == "livemod-state" and data["version"] == FORMAT_VERSION
    return [(m["name"], m["params"]) for m in data["modules"]]


def rows(host: livemod.Host) -> list[tuple[str, dict[str, object]]]:
    return [(r.name, dict(r.params)) for r in host.lsmod()]


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


# ---------------------------------------------------------------------------- writing


def test_attach_writes_on_load_param_and_unload(
        tmp_path: Path, mods: Path, new_host: Callable[..., livemod.Host]) -> None:
    path = tmp_path / "state" / "host.json"  # the folder is created on the first write
    host = new_host(name="web-1")
    StateFile(path).attach(host)
    assert not path.exists()  # attaching alone writes nothing
    host.modprobe("beta")
    assert [n for n, _ in saved(path)] == ["alpha", "beta"]
    assert json.loads(path.read_text())["host"] == "web-1"
    host.set_param("alpha", "tags", "a, b")
    host.set_param("alpha", "ratio", 2)
    assert saved(path)[0] == ("alpha", {"n": 0, "label": "", "ratio": 2.0, "on": False,
                                        "tags": ["a", "b"]})
    host.rmmod("beta")
    assert [n for n, _ in saved(path)] == ["alpha"]
    assert os.stat(path).st_mode & 0o777 == 0o600  # params may be secrets
    assert leftovers(path.parent) == []


def test_detach_stops_writing_and_close_keeps_the_set(
        tmp_path: Path, new_host: Callable[..., livemod.Host]) -> None:
    path = tmp_path / "state.json"
    host = new_host()
    detach = StateFile(path).attach(host)
    host.modprobe("beta")
    host.close()  # a shutdown, not an rmmod: the next start must restore both
    assert [n for n, _ in saved(path)] == ["alpha", "beta"]
    other = new_host()
    detach()
    detach()  # idempotent
    other.modprobe("alpha")
    assert [n for n, _ in saved(path)] == ["alpha", "beta"]


def test_events_without_a_change_do_not_rewrite(
        tmp_path: Path, mods: Path, new_host: Callable[..., livemod.Host],
        monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "state.json"
    host = new_host()
    StateFile(path).attach(host)
    host.modprobe("alpha")
    writes: list[bytes] = []
    real = StateFile._write_atomically
    monkeypatch.setattr(StateFile, "_write_atomically",
                        lambda self, payload: (writes.append(payload), real(self, payload)))
    with pytest.raises(livemod.InitError):
        host.insmod(mods / "broken.py")  # a "load-failed" event: nothing changed
    assert writes == []
    host.set_param("alpha", "n", 5)
    assert len(writes) == 1 and saved(path)[0][1]["n"] == 5


def test_a_failing_write_is_logged_and_the_host_carries_on(
        tmp_path: Path, new_host: Callable[..., livemod.Host],
        caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "state.json"
    path.mkdir()  # os.replace over a folder fails
    host = new_host()
    StateFile(path).attach(host)
    with caplog.at_level(logging.ERROR, logger="livemod"):
        host.modprobe("alpha")
    assert [r.name for r in host.lsmod()] == ["alpha"]
    assert "cannot write the state file" in caplog.text and str(path) in caplog.text
    assert leftovers(tmp_path) == []


def test_stale_temp_files_are_swept(tmp_path: Path,
                                    new_host: Callable[..., livemod.Host]) -> None:
    stale = tmp_path / ".state.json.abc123.tmp"
    stale.write_text('{"half": ')
    other = tmp_path / ".unrelated.json.x.tmp"
    other.write_text("")
    StateFile(tmp_path / "state.json").attach(new_host())
    assert not stale.exists() and other.exists()


# ---------------------------------------------------------------------------- restoring


def test_restore_gives_the_same_modules_and_params(
        tmp_path: Path, new_host: Callable[..., livemod.Host]) -> None:
    path = tmp_path / "state.json"
    first = new_host(name="one")
    StateFile(path).attach(first)
    first.insmod(first.modinfo("alpha").path, n=7, label="x y", on=True, tags=["p", "q"])
    first.modprobe("beta")
    first.modprobe("gamma", word="yo")
    first.set_param("alpha", "ratio", 1.25)
    before = rows(first)
    first.close()

    second = new_host()
    report = StateFile(path).restore(second)
    assert report.ok and report.found and report.host_name == "one"
    assert report.loaded == ("alpha", "beta", "gamma") and report.failed == ()
    assert rows(second) == before
    assert dict(second.lsmod()[0].params)["tags"] == ("p", "q")  # a tuple again
    assert second.lsmod()[2].uses == ("beta",)


def test_restore_reorders_into_dependency_order(
        tmp_path: Path, mods: Path, new_host: Callable[..., livemod.Host]) -> None:
    path = tmp_path / "state.json"
    entries = [("gamma", {}, ["beta"]), ("beta", {}, []), ("alpha", {"n": 3}, [])]
    path.write_text(json.dumps({
        "format": "livemod-state", "version": 1, "host": "h", "modules": [
            {"name": n, "path": str(mods / f"{n}.py"), "params": p, "uses": u}
            for n, p, u in entries]}))
    host = new_host()
    report = StateFile(path).restore(host)
    assert report.loaded == ("alpha", "beta", "gamma"), report
    assert [r.name for r in host.lsmod()] == ["alpha", "beta", "gamma"]
    assert dict(host.lsmod()[0].params)["n"] == 3


def test_a_module_that_fails_is_reported_and_the_rest_load(
        tmp_path: Path, mods: Path, new_host: Callable[..., livemod.Host]) -> None:
    path = tmp_path / "state.json"
    first = new_host()
    state = StateFile(path)
    state.attach(first)
    first.modprobe("beta")
    first.modprobe("gamma")
    first.close()
    (mods / "alpha.py").rename(mods / "moved.py")
    doc = json.loads(path.read_text())
    doc["modules"].insert(0, {"name": "broken", "path": str(mods / "broken.py"),
                              "params": {}})
    doc["modules"].append({"name": "extra", "path": str(mods / "gamma.py"),
                           "params": {"nope": 1}})
    path.write_text(json.dumps(doc))

    second = new_host()
    second.insmod(mods / "moved.py")  # alpha is back, from elsewhere: skipped, not failed
    report = StateFile(path).restore(second)
    assert report.skipped == ("alpha",)
    assert report.loaded == ("beta", "gamma")
    failed = {f.name: f for f in report.failed}
    assert failed["broken"].code == "init-error" and "no database" in failed["broken"].error
    assert failed["extra"].code == "param-error" and "nope" in failed["extra"].error
    assert dict(failed["extra"].params) == {"nope": 1} and not report.ok
    # The file now says what really loaded.
    assert [n for n, _ in saved(path)] == ["alpha", "beta", "gamma"]


def test_dependents_of_a_failed_module_fail_with_their_own_error(
        tmp_path: Path, mods: Path, new_host: Callable[..., livemod.Host]) -> None:
    path = tmp_path / "state.json"
    first = new_host()
    StateFile(path).attach(first)
    first.modprobe("beta")
    first.close()
    (mods / "alpha.py").unlink()
    report = StateFile(path).restore(new_host())
    assert [(f.name, f.code) for f in report.failed] == [("alpha", "module-not-found"),
                                                        ("beta", "dependency-error")]


def test_restore_defers_writes_so_a_crash_midway_keeps_everything(
        tmp_path: Path, new_host: Callable[..., livemod.Host],
        monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "state.json"
    first = new_host()
    StateFile(path).attach(first)
    first.modprobe("beta")
    first.modprobe("gamma")
    first.close()
    original = path.read_bytes()

    state = StateFile(path)
    second = new_host()
    state.attach(second)  # attached before restore: the loads must not rewrite the file
    writes: list[bytes] = []
    real = StateFile._write_atomically

    def spy(self: StateFile, payload: bytes) -> None:
        writes.append(path.read_bytes())  # what a crash at this instant would leave
        real(self, payload)

    monkeypatch.setattr(StateFile, "_write_atomically", spy)
    assert state.restore(second).loaded == ("alpha", "beta", "gamma")
    assert writes == [original]  # one write, after every module was loaded
    assert [n for n, _ in saved(path)] == ["alpha", "beta", "gamma"]


def test_missing_file_restores_nothing(tmp_path: Path,
                                       new_host: Callable[..., livemod.Host]) -> None:
    report = StateFile(tmp_path / "none.json").restore(new_host())
    assert not report.found and report.ok and report.loaded == ()
    assert not (tmp_path / "none.json").exists()


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"", "not readable JSON"),
        (b'{"format": "livemod-state", "version": 1, "modules": [{"na', "not readable JSON"),
        (b"\xff\xfe garbage", "not readable JSON"),
        (b"[1, 2]", "not a livemod state file"),
        (b'{"format": "livemod-state", "version": 99, "modules": []}', "newer livemod"),
        (b'{"format": "livemod-state", "version": "1", "modules": []}', "format version"),
        (b'{"format": "livemod-state", "version": 1, "modules": {}}', "must be a list"),
        (b'{"format": "livemod-state", "version": 1, "modules": [{"name": "a"}]}',
         "modules[0]"),
        (b'{"format": "livemod-state", "version": 1, "modules": ['
         b'{"name": "a", "path": "/a.py", "params": {}},'
         b'{"name": "a", "path": "/a.py", "params": {}}]}', "listed twice"),
    ],
)
def test_an_unusable_file_is_moved_aside_and_the_host_starts_empty(
        tmp_path: Path, new_host: Callable[..., livemod.Host], content: bytes, why: str,
        caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(content)
    host = new_host()
    with caplog.at_level(logging.WARNING, logger="livemod"):
        report = StateFile(path).restore(host)
    assert report.found and not report.ok and report.loaded == ()
    assert report.corrupt == str(path) + ".corrupt"
    assert Path(report.corrupt).read_bytes() == content  # kept for a post-mortem
    assert report.problem is not None and why in report.problem
    assert str(path) in report.problem and "fix or delete it" in report.problem
    assert str(path) in caplog.text
    assert saved(path) == []  # a fresh, valid file
    assert host.lsmod() == []


# ---------------------------------------------------------------------------- crash safety

WRITER = textwrap.dedent('''\
    import sys
    import livemod
    from livemod._statefile import StateFile

    mods, state, ready = sys.argv[1:4]
    host = livemod.Host(modpath=[mods], leak_check=False)
    StateFile(state).attach(host)
    i = 0
    while True:
        i += 1
        host.insmod(mods + "/alpha.py", n=i)
        host.modprobe("beta")
        # A large, varying value: a torn write would show as a mismatch or bad JSON.
        host.set_param("alpha", "label", "x" * (i * 997 % 60000))
        host.rmmod("beta")
        host.rmmod("alpha")
        if i == 3:
            open(ready, "w").close()
''')


def _valid_states(path: Path) -> list[str]:
    """Check the file is one complete state the writer passed through; return its names."""
    _, modules = StateFile(path).read()  # raises on anything torn or malformed
    names = [m.name for m in modules]
    assert names in ([], ["alpha"], ["alpha", "beta"]), names
    if modules:
        params = dict(modules[0].params)
        n, label = params["n"], params["label"]
        assert isinstance(n, int) and n >= 1 and isinstance(label, str)
        assert label in ("", "x" * (n * 997 % 60000)), (n, len(label))
    return names


def test_kill_minus_9_mid_write_never_leaves_a_torn_file(
        tmp_path: Path, mods: Path, new_host: Callable[..., livemod.Host]) -> None:
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    path = tmp_path / "state" / "state.json"
    rng = random.Random(4)
    seen: set[tuple[str, ...]] = set()
    for round_ in range(6):
        ready = tmp_path / f"ready-{round_}"
        proc = subprocess.Popen([sys.executable, str(script), str(mods), str(path), str(ready)])
        try:
            deadline = time.monotonic() + 30
            while not ready.exists():
                assert proc.poll() is None, "the writer died on its own"
                assert time.monotonic() < deadline, "the writer never got going"
                time.sleep(0.01)
            time.sleep(rng.uniform(0.0, 0.2))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        assert proc.returncode == -signal.SIGKILL
        seen.add(tuple(_valid_states(path)))
    # A stray temp file of the killed writer (if any) is swept by the next start.
    host = new_host()
    StateFile(path).restore(host)
    assert leftovers(path.parent) == []
    assert [r.name for r in host.lsmod()] == _valid_states(path)
    assert seen  # at least one state observed
