"""A real etcd and machines of a service for the tests: real processes, real sockets.

:class:`EtcdServer` runs Debian's ``etcd`` on 127.0.0.1 on free ports with a data folder
of its own, and stops it at the end. A :class:`Machine` is a private socket folder (its own
``XDG_RUNTIME_DIR``, so several machines share this box without seeing each other's
workers) with worker processes and a ``livemod agent`` process.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from typing import Any

from service_support import LIVEMOD, Service, wait_for

ETCD = shutil.which("etcd")
SKIP_REASON = ("etcd is not installed here: apt-get install -y etcd-server etcd-client "
               "(.ci/run installs it, so CI never skips these)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EtcdServer:
    """One etcd member on loopback; ``url`` is its client URL."""

    def __init__(self) -> None:
        assert ETCD is not None
        self.data = tempfile.mkdtemp(prefix="lmetcd")
        self.port, self.peer = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        peer = f"http://127.0.0.1:{self.peer}"
        self.log = open(os.path.join(self.data, "etcd.log"), "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [ETCD, "--name", "t", "--data-dir", os.path.join(self.data, "d"),
             "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
             "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
             "--initial-cluster", f"t={peer}", "--log-level", "warn"],
            stdout=self.log, stderr=self.log)
        wait_for(self.healthy, 30, "etcd to be healthy")

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=1) as r:
                return bool(json.loads(r.read()).get("health") == "true")
        except OSError:
            return False

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None
        self.log.close()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.data, ignore_errors=True)


class Machine(Service):
    """One machine of service ``name``: its workers and its agent."""

    def __init__(self, etcd: EtcdServer, machine: str, name: str = "web", *,
                 ttl: int = 3, prefix: str = "/livemod") -> None:
        super().__init__(name)
        self.etcd, self.machine, self.ttl, self.prefix = etcd, machine, ttl, prefix
        self.agent: subprocess.Popen[str] | None = None

    def start_agent(self) -> subprocess.Popen[str]:
        self.agent = subprocess.Popen(
            [*LIVEMOD, "agent", "--etcd", self.etcd.url, "--service", self.name,
             "--machine", self.machine, "--ttl", str(self.ttl), "--prefix", self.prefix,
             "--cache", os.path.join(self.runtime, "cache")],
            env=self.env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert self.agent.stdout is not None
        line = self.agent.stdout.readline()
        assert line.startswith("agent ready"), f"agent did not start: {line!r}"
        self.procs.append(self.agent)
        return self.agent

    def kill_agent(self) -> None:
        assert self.agent is not None
        self.agent.kill()
        self.agent.wait(10)

    def greetings(self) -> set[str]:
        """What every worker of this machine answers (the greet hook), through its socket."""
        return {v for vs in self.versions().values() for v in vs}


def rollout(etcd: EtcdServer, *args: str, service: str = "web", timeout: float = 120,
            prefix: str = "/livemod") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "LIVEMOD_SOCKET"}
    return subprocess.run([*LIVEMOD, "rollout", "--etcd", etcd.url, "--service", service,
                           "--prefix", prefix, *args], env=env, capture_output=True,
                          text=True, timeout=timeout)


def status(etcd: EtcdServer, service: str = "web") -> Any:
    r = rollout(etcd, "status", "--json", service=service)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def machines_at(etcd: EtcdServer, generation: int, count: int) -> bool:
    found = status(etcd)["machines"]
    return len(found) == count and all(
        m["generation"] == generation and m["state"] == "idle" and not m["drift"]
        for m in found.values())


def now() -> float:
    return time.monotonic()


__all__ = ["ETCD", "SKIP_REASON", "EtcdServer", "Machine", "machines_at", "now", "rollout",
           "status", "sys"]
