"""The ``livemod`` command end to end: a real ``livemod host`` process, a real socket, and
real ``livemod`` commands run as subprocesses, checked by output and exit code."""

from __future__ import annotations

import atexit
import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from livemod.cli import EXIT_CODES
from livemod.control import HostUnreachable, NotSupported

# The hosts use a copy: `livemod depmod` writes its index into the modpath folders.
MODULES = Path(tempfile.mkdtemp(prefix="livemod-cli-modules-")) / "cli_modules"
shutil.copytree(Path(__file__).parent / "fixtures" / "cli_modules", MODULES)
atexit.register(shutil.rmtree, MODULES.parent, True)
LIVEMOD = [sys.executable, "-m", "livemod.cli"]


def livemod(*args: str, env: dict[str, str] | None = None, cwd: str | None = None,
            timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*LIVEMOD, *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=timeout)


def _lines(fd: int, *, timeout: float) -> Iterator[str]:
    """Lines from a pipe as they arrive (unbuffered: a text wrapper's buffer would hide
    lines from select), failing once ``timeout`` seconds have passed."""
    buf = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while True:
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                yield line.decode()
            left = deadline - time.monotonic()
            assert left > 0 and sel.select(left), f"no line within {timeout}s (got {buf!r})"
            data = os.read(fd, 65536)
            assert data, f"end of output (got {buf!r})"
            buf += data


class HostProcess:
    """``livemod host`` as a subprocess, started and waited for until it says it is ready."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        # A file, never a pipe: a full pipe nobody reads would block the host.
        self.stderr: IO[str] = tempfile.TemporaryFile("w+")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [*LIVEMOD, "host", "--modpath", str(MODULES), *args], env=env,
            stdout=subprocess.PIPE, stderr=self.stderr, text=True,
        )
        self.ready = self._wait_ready(15.0)
        self.socket = self.ready.rsplit(" ready on ", 1)[1].strip()

    def _wait_ready(self, timeout: float) -> str:
        assert self.proc.stdout is not None
        try:
            for line in _lines(self.proc.stdout.fileno(), timeout=timeout):
                if " ready on " in line:
                    return line
        except AssertionError:
            pass
        self.proc.kill()
        self.proc.wait(5)
        raise AssertionError(f"livemod host never became ready:\n{self.errors()}")

    def errors(self) -> str:
        self.stderr.seek(0)
        return self.stderr.read()

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(15)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(5)
            assert self.proc.stdout is not None
            self.proc.stdout.close()
            self.stderr.close()


@pytest.fixture
def workdir() -> Iterator[str]:
    folder = tempfile.mkdtemp(prefix="lmcli")  # short: socket paths must fit 107 bytes
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def running(workdir: str) -> Iterator[tuple[HostProcess, dict[str, str]]]:
    """A host on the cli fixture modules, and an environment whose LIVEMOD_SOCKET is it."""
    host = HostProcess("--socket", os.path.join(workdir, "h.sock"), "--name", "cli-test")
    env = {**os.environ, "LIVEMOD_SOCKET": host.socket}
    yield host, env
    assert host.stop() == 0, host.errors()


def _code(name: str) -> int:
    return next(code for cls, code in EXIT_CODES.items() if cls.__name__ == name)


def test_every_subcommand(running: tuple[HostProcess, dict[str, str]]) -> None:
    host, env = running

    def ok(*args: str, cwd: str | None = None) -> str:
        r = livemod(*args, env=env, cwd=cwd)
        assert r.returncode == 0, (args, r.stdout, r.stderr)
        return r.stdout

    def fails(code: int, *args: str) -> str:
        r = livemod(*args, env=env)
        assert r.returncode == code, (args, r.returncode, r.stdout, r.stderr)
        return r.stderr

    status = json.loads(ok("status", "--json"))
    assert status["name"] == "cli-test" and status["pid"] == host.proc.pid
    assert "cli-test (pid" in ok("status")
    assert ok("lsmod").split() == ["Module", "Version", "State", "Size", "Holds", "Used", "by"]

    assert ok("modprobe", "beta").strip() == "beta 2.1.0 LIVE"
    table = ok("lsmod").splitlines()
    name, version, state, size, *rest = table[1].split()
    assert [name, version, state, *rest] == ["alpha", "1.0.0", "LIVE", "0", "1", "beta"]
    assert int(size) > 1000
    rows = json.loads(ok("lsmod", "--json"))
    assert [(r["name"], r["version"], r["state"], r["holds"], r["used_by"]) for r in rows] == [
        ("alpha", "1.0.0", "LIVE", 0, ["beta"]), ("beta", "2.1.0", "LIVE", 0, [])]

    # A relative path is the caller's, not the host's: the command makes it absolute.
    assert json.loads(ok("insmod", "holder.py", "hold_for=0", "--json", cwd=str(MODULES)))[
        "params"] == {"hold_for": 0.0}
    assert "failing on purpose" in fails(_code("InitError"), "insmod", str(MODULES / "failing.py"))
    fails(_code("ModuleNotFound"), "insmod", str(MODULES / "missing.py"))
    fails(_code("ModuleExists"), "insmod", str(MODULES / "alpha.py"))
    fails(_code("ModuleNotFound"), "modprobe", "nothing-like-it")

    assert "parm:        greeting:str (default 'hello', writable)" in ok("modinfo", "first")
    assert "filename:    " + str(MODULES / "alpha.py") in ok("modinfo", "first")
    local = json.loads(ok("modinfo", str(MODULES / "beta.py"), "--json"))  # read here
    assert local["depends"] == ["alpha>=1.0"]
    fails(_code("ModuleNotFound"), "modinfo", "nothing-like-it")

    assert "greeting   str   yes" in ok("param", "alpha")
    assert ok("param", "alpha", "greeting").strip() == "greeting=hello"
    assert ok("param", "alpha", "greeting=hey").strip() == "greeting=hey"
    assert json.loads(ok("param", "alpha", "--json"))["greeting"]["value"] == "hey"
    assert "not writable" in fails(_code("ParamError"), "param", "alpha", "count=3")
    fails(_code("ParamError"), "param", "holder", "hold_for=later")
    fails(_code("ModuleNotFound"), "param", "nothing-like-it")

    err = fails(_code("ModuleBusy"), "rmmod", "alpha")
    assert "used by 'beta'" in err and "held by: module 'beta'" in err
    assert ok("modprobe", "-r", "beta").strip() == "removed: beta, alpha"
    assert ok("rmmod", "holder", "--json").strip() == '{\n  "removed": "holder"\n}'.strip()
    fails(_code("ModuleNotFound"), "rmmod", "holder")

    log = ok("log")
    assert " load " in log and " load-failed " in log and " param " in log
    events = json.loads(ok("log", "--json", "--limit", "3"))
    assert len(events) == 3 and events[-1]["kind"] == "unload"
    assert ok("leaks").startswith("no leaks") and json.loads(ok("leaks", "--json")) == []

    r = livemod("depmod", env=env)
    assert r.returncode in (0, EXIT_CODES[NotSupported]), r.stderr

    assert livemod("rmmod", env=env).returncode == 2  # usage: NAME missing
    assert livemod("insmod", "x.py", "novalue", env=env).returncode == 2
    gone = livemod("lsmod", "--socket", host.socket + ".nope")
    assert gone.returncode == EXIT_CODES[HostUnreachable] and "livemod host" in gone.stderr


def test_rmmod_wait_shows_what_it_waits_for(running: tuple[HostProcess, dict[str, str]]) -> None:
    _host, env = running
    assert livemod("insmod", str(MODULES / "holder.py"), env=env).returncode == 0
    # Pins for 8 s: long enough for the next two commands even on a loaded machine, where
    # one `livemod` run takes over a second.
    assert livemod("param", "holder", "hold_for=8", env=env).returncode == 0
    refused = livemod("rmmod", "holder", env=env)
    assert refused.returncode == _code("ModuleBusy") and "packet pinned" in refused.stderr
    timed_out = livemod("rmmod", "holder", "--wait", "0.2", env=env)
    assert timed_out.returncode == _code("ModuleBusy") and "rolled back" in timed_out.stderr
    assert json.loads(livemod("lsmod", "--json", env=env).stdout)[0]["state"] == "LIVE"

    # A fresh pin, so the waiting rmmod has something to wait for however slow the above was.
    assert livemod("param", "holder", "hold_for=8", env=env).returncode == 0
    waited = livemod("rmmod", "holder", "--wait", "20", env=env)
    assert waited.returncode == 0, waited.stderr
    assert "livemod rmmod: holder: waiting for: packet pinned for 8s" in waited.stderr
    assert json.loads(livemod("lsmod", "--json", env=env).stdout) == []


def test_log_follow(running: tuple[HostProcess, dict[str, str]]) -> None:
    _host, env = running
    follow = subprocess.Popen([*LIVEMOD, "log", "--follow", "--json"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert livemod("insmod", str(MODULES / "chatty.py"), env=env).returncode == 0
        assert livemod("param", "chatty", "note=hello", env=env).returncode == 0
        seen: list[dict[str, Any]] = []
        assert follow.stdout is not None
        for line in _lines(follow.stdout.fileno(), timeout=10):
            seen.append(json.loads(line))
            if seen[-1]["kind"] == "param":
                break
        assert [e["kind"] for e in seen] == ["load", "param"]
        assert seen[1]["data"] == {"key": "note", "value": "hello"}
        follow.send_signal(signal.SIGINT)
        assert follow.wait(10) == 0
    finally:
        if follow.poll() is None:
            follow.kill()
        follow.communicate(timeout=5)


def test_sigterm_unloads_dependents_first_and_removes_the_socket(workdir: str) -> None:
    sock, marker = os.path.join(workdir, "t.sock"), os.path.join(workdir, "marker")
    host = HostProcess("--socket", sock)
    env = {**os.environ, "LIVEMOD_SOCKET": sock}
    for name in ("alpha", "beta"):
        r = livemod("insmod", str(MODULES / f"{name}.py"), f"marker={marker}", env=env)
        assert r.returncode == 0, r.stderr
    errors = ""
    try:
        assert host.proc.poll() is None
        os.kill(host.proc.pid, signal.SIGTERM)
        assert host.proc.wait(15) == 0
        errors = host.errors()
    finally:
        host.stop()
    assert "unloading 2 module(s)" in errors and "stopped" in errors
    assert not os.path.exists(sock)
    assert Path(marker).read_text() == "beta exit\nalpha exit\n"


def test_default_socket_load_option_and_sigint(workdir: str) -> None:
    env = {**os.environ, "XDG_RUNTIME_DIR": workdir}
    env.pop("LIVEMOD_SOCKET", None)
    host = HostProcess("--name", "found", "--load", "beta", env=env)
    try:
        assert host.socket == os.path.join(workdir, "livemod", "found.sock")
        assert oct(os.stat(host.socket).st_mode & 0o777) == "0o600"
        rows = json.loads(livemod("lsmod", "--json", env=env).stdout)  # found without help
        assert [r["name"] for r in rows] == ["alpha", "beta"]
        other = HostProcess("--name", "second", env=env)
        try:
            r = livemod("lsmod", env=env)
            assert r.returncode == EXIT_CODES[HostUnreachable] and "--socket" in r.stderr
        finally:
            assert other.stop(signal.SIGINT) == 0
    finally:
        assert host.stop(signal.SIGINT) == 0
    assert os.listdir(os.path.join(workdir, "livemod")) == []


def test_host_refuses_a_bad_start(workdir: str) -> None:
    sock = os.path.join(workdir, "bad.sock")
    r = livemod("host", "--socket", sock, "--modpath", str(MODULES), "--load", "failing")
    assert r.returncode == _code("InitError") and "failing on purpose" in r.stderr
    assert not os.path.exists(sock)
    r = livemod("host", "--socket", sock, "--config", os.path.join(workdir, "none.toml"))
    assert r.returncode == _code("ConfigError") and "none.toml" in r.stderr


def test_host_from_a_config_file(workdir: str) -> None:
    config = Path(workdir) / "livemod.toml"
    sock = os.path.join(workdir, "c.sock")
    config.write_text(
        'load = ["alpha"]\n'
        "[host]\n"
        'name = "from-config"\n'
        f"modpath = [{json.dumps(str(MODULES))}]\n"
        f"socket = {json.dumps(sock)}\n"
        "[options.alpha]\n"
        'greeting = "bonjour"\n'
    )
    host = HostProcess("--config", str(config))
    try:
        assert host.socket == sock
        env = {**os.environ, "LIVEMOD_SOCKET": sock}
        (row,) = json.loads(livemod("lsmod", "--json", env=env).stdout)
        assert row["name"] == "alpha" and row["params"]["greeting"] == "bonjour"
        assert json.loads(livemod("status", "--json", env=env).stdout)["name"] == "from-config"
    finally:
        assert host.stop() == 0


def test_demo_and_local_modinfo_need_no_host() -> None:
    env = {**os.environ, "LIVEMOD_SOCKET": "/nonexistent/livemod.sock"}
    r = livemod("demo", "--seconds", "1", env=env, timeout=60)
    assert r.returncode == 0 and "demo: OK" in r.stdout
    r = livemod("modinfo", str(MODULES / "alpha.py"), env=env)
    assert r.returncode == 0 and "name:        alpha" in r.stdout
    assert "author:" not in r.stdout  # empty fields are left out, as kmod does


def test_restart_after_kill_9_brings_back_the_same_modules_and_params(workdir: str) -> None:
    config = Path(workdir) / "livemod.toml"
    sock = os.path.join(workdir, "r.sock")
    config.write_text(
        "[host]\n"
        f"modpath = [{json.dumps(str(MODULES))}]\n"
        f"socket = {json.dumps(sock)}\n"
        'state_file = "state.json"\n'
    )
    env = {**os.environ, "LIVEMOD_SOCKET": sock}
    first = HostProcess("--config", str(config))
    try:
        for args in (["insmod", str(MODULES / "alpha.py"), "greeting=yo", "count=7"],
                     ["modprobe", "beta"], ["insmod", str(MODULES / "holder.py")],
                     ["param", "alpha", "greeting=again"], ["rmmod", "holder"]):
            r = livemod(*args, env=env)
            assert r.returncode == 0, (args, r.stderr)
        first.proc.kill()  # no clean shutdown: the state file is all that is left
        assert first.proc.wait(10) == -signal.SIGKILL
    finally:
        first.stop()
    assert os.path.exists(sock)  # left behind; the next host replaces it
    second = HostProcess("--config", str(config))
    try:
        rows = json.loads(livemod("lsmod", "--json", env=env).stdout)
        assert [(r["name"], r["state"]) for r in rows] == [("alpha", "LIVE"), ("beta", "LIVE")]
        assert rows[0]["params"] == {"greeting": "again", "count": 7, "marker": ""}
        assert rows[0]["used_by"] == ["beta"]
    finally:
        assert second.stop() == 0
