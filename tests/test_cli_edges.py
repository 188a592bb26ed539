"""The CLI's rough edges, measured against kmod: each behaviour end to end, against a real
``livemod host`` process over a real socket. Commands run in this process through
``livemod.cli.main`` (the same code the ``livemod`` script runs, without a second of
interpreter start-up each) unless a signal, a real stdout or a missing package is needed."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import livemod as lm
from livemod.cli import EXIT_CODES, main
from livemod.cli._parser import build_parser
from livemod.control import HostUnreachable
from test_cli import LIVEMOD, MODULES, HostProcess, _lines, livemod


def _code(cls: type) -> int:
    return EXIT_CODES[cls]


@pytest.fixture
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    import shutil
    import tempfile

    folder = tempfile.mkdtemp(prefix="lmedge")  # short: socket paths must fit 107 bytes
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def host(workdir: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[HostProcess]:
    config = Path(workdir) / "livemod.toml"
    config.write_text(
        'blacklist = ["holder"]\n'
        "[host]\n"
        f"modpath = [{json.dumps(str(MODULES))}]\n"
        "[aliases]\n"
        'greeter = "alpha"\n'
        "[options.alpha]\n"
        'greeting = "bonjour"\n'
    )
    h = HostProcess("--socket", os.path.join(workdir, "h.sock"), "--config", str(config))
    monkeypatch.setenv("LIVEMOD_SOCKET", h.socket)
    yield h
    assert h.stop() == 0, h.errors()


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_log_follow_outlives_the_timeout_and_n0_shows_only_new_events(
        host: HostProcess, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "insmod", str(MODULES / "alpha.py"))[0] == 0
    code, out, _ = run(capsys, "log", "-n", "0")
    assert code == 0 and out == ""
    code, out, _ = run(capsys, "log", "-n", "1", "--json")
    assert [e["kind"] for e in json.loads(out)] == ["load"]
    follow = subprocess.Popen([*LIVEMOD, "log", "--follow", "-n", "0", "--json",
                               "--timeout", "0.5"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        assert follow.stdout is not None
        lines = _lines(follow.stdout.fileno(), timeout=30)
        # The follower subscribes some time after it starts: change a parameter until it
        # shows one. The first event it shows must be such a change, never alpha's load
        # from before it started (-n 0).
        deadline = time.monotonic() + 30
        first = None
        while first is None:
            assert time.monotonic() < deadline, "log --follow never showed an event"
            assert run(capsys, "param", "alpha", "greeting=hey")[0] == 0
            ready, _, _ = select.select([follow.stdout.fileno()], [], [], 1.0)
            if ready:
                first = json.loads(next(lines))
        assert first["kind"] == "param", first
        # Four times the --timeout without a single event: it must still be following.
        with pytest.raises(subprocess.TimeoutExpired):
            follow.wait(2.0)
        assert run(capsys, "modprobe", "beta")[0] == 0
        while (event := json.loads(next(lines)))["kind"] == "param":
            pass  # a late one of the loop above
        assert (event["kind"], event["module"]) == ("load", "beta")
        follow.send_signal(signal.SIGINT)
        assert follow.wait(10) == 0
    finally:
        if follow.poll() is None:
            follow.kill()
        follow.communicate(timeout=5)


def test_modinfo_works_offline_with_kmod_field_names(
        workdir: str, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIVEMOD_SOCKET", os.path.join(workdir, "nobody.sock"))
    code, out, _ = run(capsys, "modinfo", "first", "--modpath", str(MODULES))  # an alias
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == f"filename:    {MODULES / 'alpha.py'}"
    assert "name:        alpha" in lines and "alias:       first" in lines
    assert "parm:        count:int (default 1) fixed at load" in lines
    assert not any(line.startswith(("author:", "depends:")) for line in lines)  # empty: out
    code, out, _ = run(capsys, "modinfo", "beta", "--modpath", str(MODULES))
    assert "depends:     alpha>=1.0" in out.splitlines()
    config = Path(workdir) / "c.toml"
    config.write_text(f"[host]\nmodpath = [{json.dumps(str(MODULES))}]\n"
                      '[aliases]\ngreeter = "alpha"\n')
    code, out, _ = run(capsys, "modinfo", "greeter", "--config", str(config), "--json")
    assert code == 0 and json.loads(out)["name"] == "alpha"
    code, _, err = run(capsys, "modinfo", "nothing-like-it", "--modpath", str(MODULES))
    assert code == _code(lm.ModuleNotFound) and "nothing-like-it" in err
    code, _, err = run(capsys, "modinfo", "alpha")  # no host, no modpath: say how
    assert code == _code(HostUnreachable) and "--modpath DIR" in err


def test_modprobe_dry_run_show_depends_and_config(
        host: HostProcess, workdir: str, capsys: pytest.CaptureFixture[str]) -> None:
    alpha, beta = MODULES / "alpha.py", MODULES / "beta.py"
    code, out, _ = run(capsys, "modprobe", "-n", "beta", "--modpath", str(MODULES))  # offline
    assert code == 0 and out.splitlines() == [f"insmod {alpha}", f"insmod {beta}"]
    assert run(capsys, "modprobe", "greeter")[0] == 0  # the config's alias, over the socket
    code, out, _ = run(capsys, "modprobe", "--dry-run", "beta")
    assert code == 0 and out.splitlines() == [f"insmod {beta}"]  # alpha is loaded already
    code, out, _ = run(capsys, "modprobe", "--show-depends", "beta")
    assert out.splitlines() == [f"insmod {alpha}  # loaded", f"insmod {beta}"]
    code, out, _ = run(capsys, "lsmod", "--json")
    assert [r["name"] for r in json.loads(out)] == ["alpha"]  # -n loaded nothing
    code, _, err = run(capsys, "modprobe", "-n", "holder")
    assert code == _code(lm.ModuleNotFound) and "blacklisted" in err
    code, out, _ = run(capsys, "modprobe", "-c")
    assert code == 0
    assert {f"modpath {MODULES}", "alias greeter alpha", "blacklist holder",
            "options alpha greeting=bonjour"} <= set(out.splitlines())
    code, out, _ = run(capsys, "modprobe", "-c", "--json",
                       "--config", os.path.join(workdir, "livemod.toml"))  # offline
    assert json.loads(out)["aliases"] == {"greeter": "alpha"}


def test_stale_sockets_are_named_and_cleaned(workdir: str) -> None:
    env = {**os.environ, "XDG_RUNTIME_DIR": workdir}
    env.pop("LIVEMOD_SOCKET", None)
    live = HostProcess("--name", "alive", env=env)
    dead = os.path.join(workdir, "livemod", "dead.sock")
    try:
        # What a host killed with -9 leaves: a socket file nobody listens on.
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(dead)
        s.close()
        past = time.time() - 60
        os.utime(dead, (past, past))
        r = livemod("lsmod", "--json", env=env)
        assert r.returncode == 0, r.stderr
        assert f"removed stale socket {dead}" in r.stderr
        assert not os.path.exists(dead) and os.path.exists(live.socket)
    finally:
        assert live.stop() == 0


def test_socket_that_is_a_folder_or_a_file_says_so(
        workdir: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "lsmod", "--socket", workdir, "--json")
    error = json.loads(out)["error"]
    assert code == _code(HostUnreachable) and error["code"] == "host-unreachable"
    assert f"{workdir} is a folder, not a socket" in error["message"]
    plain = os.path.join(workdir, "plain")
    Path(plain).write_text("")
    code, _, err = run(capsys, "status", "--socket", plain)
    assert code == _code(HostUnreachable) and f"{plain} is a regular file" in err


def test_json_everywhere_and_errors_as_json(
        host: HostProcess, workdir: str, capsys: pytest.CaptureFixture[str]) -> None:
    key = os.path.join(workdir, "key")
    code, out, _ = run(capsys, "keygen", key, "--json")
    assert code == 0 and json.loads(out) == {"private": key, "public": key + ".pub"}
    code, out, _ = run(capsys, "sign", str(MODULES / "alpha.py"), "--key", key, "--json")
    signed = json.loads(out)
    assert code == 0 and signed["name"] == "alpha" and signed["files"] == 1
    os.unlink(signed["signature"])  # the fixture folder is shared with test_cli
    code, out, _ = run(capsys, "rmmod", "nothing-like-it", "--json")
    assert code == _code(lm.ModuleNotFound)
    assert json.loads(out)["error"]["code"] == "module-not-found"
    assert run(capsys, "modprobe", "beta")[0] == 0
    code, out, err = run(capsys, "rmmod", "alpha", "--json")
    error = json.loads(out)["error"]
    assert code == _code(lm.ModuleBusy) and error["exit"] == code and err == ""
    assert "--cascade" in error["message"] and "cascade=True" not in error["message"]
    assert any("beta" in h for h in error["holders"])
    code, _, err = run(capsys, "rmmod", "alpha")  # people get the flag's name too
    assert "--cascade" in err and "cascade=True" not in err
    with pytest.raises(SystemExit) as usage:
        main(["rmmod", "--json"])  # NAME missing
    assert usage.value.code == 2
    assert json.loads(capsys.readouterr().out)["error"]["code"] == "usage"
    r = livemod("demo", "--seconds", "1", "--json", timeout=60)
    demo = json.loads(r.stdout)
    assert r.returncode == 0 and demo["ok"] and any("demo: OK" in x for x in demo["lines"])
    proc = subprocess.Popen([*LIVEMOD, "host", "--json", "--socket",
                             os.path.join(workdir, "j.sock")], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        ready = json.loads(next(_lines(proc.stdout.fileno(), timeout=15)))
        assert ready == {"event": "ready", "name": ready["name"], "pid": proc.pid,
                         "socket": os.path.join(workdir, "j.sock")}
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        proc.communicate(timeout=5)


def test_every_command_and_positional_has_help_and_exit_codes_are_listed() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert sub.choices is not None
    for name, command in sub.choices.items():
        assert command.description, name
        assert any(a.dest == "json" for a in command._actions), f"{name} lacks --json"
        for action in command._actions:
            if not action.option_strings:
                assert action.help, f"{name} {action.dest}"
    text = parser.format_help()
    assert "exit codes:" in text and "17   upgrade refused" in text


def test_lsmod_size_is_the_memory_a_module_holds(tmp_path: Path) -> None:
    (tmp_path / "big.py").write_text(
        '__livemod__ = {"name": "big", "version": "1.0"}\n'
        "import logging\n"
        "LOG = logging.getLogger('big')  # the process's loggers are not big's\n"
        "DATA = [str(i) * 10 for i in range(20000)]\n"
    )
    (tmp_path / "small.py").write_text('__livemod__ = {"name": "small", "version": "1.0"}\n')
    with lm.Host([tmp_path]) as h:
        h.modprobe("big")
        h.modprobe("small")
        sizes = {row.name: row.size for row in h.lsmod()}
    assert 1_000_000 < sizes["big"] < 3_000_000, sizes  # 20000 strings of 50-100 bytes
    assert 0 < sizes["small"] < 20_000, sizes


def test_depmod_output_is_aligned_and_rounded(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "one.py").write_text('__livemod__ = {"name": "one", "version": "1.0"}\n')
    code, out, _ = run(capsys, "depmod", str(tmp_path))
    lines = out.splitlines()
    starts = {len(line) - len(line.split(":", 1)[1].lstrip()) for line in lines}
    assert code == 0 and len(starts) == 1, out  # every value starts in one column
    seconds = next(line for line in lines if line.startswith("seconds:"))
    assert seconds.split()[-1] == "s" and len(seconds.split()[-2].split(".")[1]) == 3


def test_event_log_records_refused_upgrades_and_syntax_errors(tmp_path: Path) -> None:
    path = tmp_path / "svc.py"
    path.write_text('__livemod__ = {"name": "svc", "version": "1.3.0"}\n')
    broken = tmp_path / "broken.py"
    broken.write_text('__livemod__ = {"name": "broken", "version": "1.0"}\ndef (:\n')
    with lm.Host([tmp_path]) as h:
        h.insmod(path)
        path.write_text('__livemod__ = {"name": "svc", "version": "1.2.0"}\n')
        with pytest.raises(lm.UpgradeError):
            h.replace("svc")
        path.write_text('__livemod__ = {"name": "svc", "version": "1.4.0"}\nx = (\n')
        with pytest.raises(lm.ManifestError):
            h.replace("svc")
        with pytest.raises(lm.ManifestError):
            h.insmod(broken)
        events = [(e.kind, e.module, e.message) for e in h.events()]
    refused = [e for e in events if e[0] == "upgrade-refused"]
    assert len(refused) == 2 and "downgrade" in refused[0][2] and "svc.py" in refused[1][2]
    assert any(k == "load-failed" and "broken.py" in m for k, _, m in events)


def test_watch_refuses_downgrades_and_says_removal_pending(workdir: str) -> None:
    folder = Path(workdir) / "mods"
    folder.mkdir()
    source = (MODULES / "holder.py").read_text()
    mod = folder / "holder.py"
    mod.write_text(source)
    sock = os.path.join(workdir, "w.sock")
    h = HostProcess("--socket", sock, "--timeout", "0.3")
    env = {**os.environ, "LIVEMOD_SOCKET": sock}
    watch = None
    try:
        assert livemod("insmod", str(mod), env=env).returncode == 0
        watch = subprocess.Popen([*LIVEMOD, "watch", str(folder), "--json"], env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert watch.stdout is not None
        lines = _lines(watch.stdout.fileno(), timeout=60)
        assert "watching" in json.loads(next(lines))
        # Pinned: the old version cannot drain within the host's 0.3 s.
        assert livemod("param", "holder", "hold_for=4", env=env).returncode == 0
        mod.write_text(source.replace('"version": "0.1.0"', '"version": "0.2.0"'))
        upgraded = json.loads(next(lines))
        assert upgraded["ok"] and upgraded["new_version"] == "0.2.0", upgraded
        assert upgraded["removal_pending"], upgraded
        mod.write_text(source)  # back to 0.1.0: a downgrade
        refused = json.loads(next(lines))
        assert not refused["ok"] and "--downgrade" in refused["error"], refused
        log = livemod("log", "--json", env=env)
        kinds = [e["kind"] for e in json.loads(log.stdout)]
        assert "upgrade-pending" in kinds and "upgrade-refused" in kinds
    finally:
        if watch is not None:
            watch.send_signal(signal.SIGINT)
            try:
                watch.wait(15)
            finally:
                if watch.poll() is None:
                    watch.kill()
                watch.communicate(timeout=5)
        assert h.stop() == 0, h.errors()


def test_watch_text_says_removal_pending() -> None:
    from livemod.watch import UpgradeOutcome

    line = str(UpgradeOutcome("svc", "1.0", "1.1", 0.01, "", ("held by x",)))
    assert "removal pending" in line and "held by x" in line


def test_a_missing_extra_exits_15_with_the_pip_command(tmp_path: Path) -> None:
    fake = tmp_path / "site"
    for package in ("watchfiles", "cryptography"):
        (fake / package).mkdir(parents=True)
        (fake / package / "__init__.py").write_text(f"raise ImportError('no {package}')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(fake), *sys.path])}
    r = livemod("keygen", str(tmp_path / "k"), env=env)
    assert r.returncode == 15 and "pip install 'livemod[sign]'" in r.stderr, r.stderr
    r = livemod("watch", str(tmp_path), "--socket", "/nonexistent.sock", "--json", env=env)
    error = json.loads(r.stdout)["error"]
    assert r.returncode == 15 and error["code"] == "not-installed"
    assert "pip install 'livemod[watch]'" in error["message"]
