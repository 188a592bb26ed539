"""Worker processes of a service for the tests: real processes, real sockets."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).parent / "fixtures" / "service"
WORKER = FIXTURES / "worker.py"
LIVEMOD = [sys.executable, "-m", "livemod.cli"]


def wait_for(predicate: Callable[[], Any], timeout: float = 15.0, what: str = "it") -> Any:
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout}s"
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


class Service:
    """A service's worker processes in a private socket folder."""

    def __init__(self, name: str = "svc") -> None:
        self.name = name
        self.runtime = tempfile.mkdtemp(prefix="lmsvc")  # short: socket paths fit 107 bytes
        self.env = {**os.environ, "XDG_RUNTIME_DIR": self.runtime}
        self.env.pop("LIVEMOD_SOCKET", None)
        self.modules = Path(self.runtime) / "modules"
        shutil.copytree(FIXTURES, self.modules)
        self.procs: list[subprocess.Popen[str]] = []

    @property
    def folder(self) -> str:
        return os.path.join(self.runtime, "livemod", self.name)

    def module(self, name: str) -> str:
        return str(self.modules / name)

    def spawn(self, *modules: str, refuse: bool = False) -> subprocess.Popen[str]:
        env = dict(self.env)
        if refuse:
            env["LIVEMOD_TEST_REFUSE"] = "1"
        proc = subprocess.Popen(
            [sys.executable, str(WORKER), self.name, *(self.module(m) for m in modules)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("ready"), f"worker did not start: {line!r}"
        self.procs.append(proc)
        return proc

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*LIVEMOD, "--service", self.name, *args], env=self.env,
                              capture_output=True, text=True, timeout=timeout)

    def ok(self, *args: str) -> str:
        r = self.cli(*args)
        assert r.returncode == 0, (args, r.stdout, r.stderr)
        return r.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "--json"))

    def versions(self) -> dict[int, list[str]]:
        found = self.json("lsmod")["workers"]
        return {int(p): [f"{r['name']} {r['version']}" for r in rows]
                for p, rows in found.items()}

    def generations(self) -> dict[int, int]:
        found = self.json("status")["workers"]
        return {int(p): st["service"]["generation"] for p, st in found.items()}

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
            if proc.stdout is not None:
                proc.stdout.close()
        shutil.rmtree(self.runtime, ignore_errors=True)


def greet_in_worker(who: str) -> tuple[int, list[str]]:
    """A pool task: this process's worker host greets ``who``."""
    from livemod.integrations import current_host

    host = current_host()
    assert host is not None, "the pool initializer did not build a worker host"
    return os.getpid(), list(host.hook("greet")(who))
