"""A real etcd and machines of a service for the tests: real processes, real sockets.

:class:`EtcdServer` runs Debian's ``etcd`` on 127.0.0.1 on free ports with a data folder
of its own, and stops it at the end. A :class:`Machine` is a private socket folder (its own
``XDG_RUNTIME_DIR``, so several machines share this box without seeing each other's
workers) with worker processes and a ``livemod agent`` process.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from typing import Any

import pytest

from service_support import LIVEMOD, Service, wait_for

ETCD = shutil.which("etcd")
SKIP_REASON = ("etcd is not installed here: apt-get install -y etcd-server etcd-client "
               "(.ci/run installs it, so CI never skips these)")
#: Skip only on a developer's machine without etcd; under CI (CI=true) they run, and fail
#: loudly if .ci/run did not install it.
requires_etcd = pytest.mark.skipif(ETCD is None and not os.environ.get("CI"),
                                   reason=SKIP_REASON)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EtcdServer:
    """One etcd member on loopback; ``url`` is its client URL."""

    def __init__(self) -> None:
        assert ETCD is not None, SKIP_REASON
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


class Proxy:
    """A TCP relay on loopback in front of etcd, which the test can cut and restore: an
    agent behind it loses the engine while etcd itself stays up for everyone else."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.open = threading.Event()
        self.open.set()
        self.conns: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.open.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target), timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self.lock:
                self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self.open.clear()
        with self.lock:
            conns, self.conns = self.conns, []
        for s in conns:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def restore(self) -> None:
        self.open.set()

    def close(self) -> None:
        self.cut()
        self.listener.close()


class Machine(Service):
    """One machine of service ``name``: its workers and its agent."""

    def __init__(self, etcd: EtcdServer, machine: str, name: str = "web", *,
                 ttl: int = 3, prefix: str = "/livemod", url: str | None = None) -> None:
        super().__init__(name)
        self.etcd, self.machine, self.ttl, self.prefix = etcd, machine, ttl, prefix
        self.url = url or etcd.url
        self.agent: subprocess.Popen[str] | None = None
        self.agent_log = os.path.join(self.runtime, "agent.log")

    def log(self) -> str:
        """The agent's log (every start of it), for failure messages."""
        try:
            with open(self.agent_log) as f:
                return f.read()
        except OSError:
            return ""

    def start_agent(self) -> subprocess.Popen[str]:
        self.agent = subprocess.Popen(
            [*LIVEMOD, "agent", "--etcd", self.url, "--service", self.name,
             "--machine", self.machine, "--ttl", str(self.ttl), "--prefix", self.prefix,
             "--cache", os.path.join(self.runtime, "cache")],
            env=self.env, stdout=subprocess.PIPE, stderr=open(self.agent_log, "a"),  # noqa: SIM115
            text=True)
        assert self.agent.stdout is not None
        line = self.agent.stdout.readline()
        assert line.startswith("agent ready"), f"agent did not start: {line!r}"
        self.procs.append(self.agent)
        return self.agent

    def kill_agent(self) -> None:
        assert self.agent is not None
        self.agent.kill()
        self.agent.wait(10)

    def _ask(self, op: str) -> dict[int, Any]:
        """Ask every worker of this machine ``op`` over its socket, from this process (the
        CLI's ``--service`` form is tested elsewhere, and a process per poll is slow)."""
        from livemod.control import ControlClient

        found = {}
        for name in os.listdir(self.folder):
            if name.endswith(".sock") and name[:-5].isdigit():
                with ControlClient(os.path.join(self.folder, name), timeout=30) as client:
                    found[int(name[:-5])] = client.call(op)
        return found

    def versions(self) -> dict[int, list[str]]:
        return {p: [f"{r['name']} {r['version']}" for r in rows]
                for p, rows in self._ask("lsmod").items()}

    def generations(self) -> dict[int, int]:
        return {p: st["generation"] for p, st in self._ask("service").items()}

    def greetings(self) -> set[str]:
        """The module versions every worker of this machine runs, asked over its socket."""
        return {v for vs in self.versions().values() for v in vs}


def rollout(etcd: EtcdServer, *args: str, service: str = "web", timeout: float = 120,
            prefix: str = "/livemod") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "LIVEMOD_SOCKET"}
    return subprocess.run([*LIVEMOD, "rollout", "--etcd", etcd.url, "--service", service,
                           "--prefix", prefix, *args], env=env, capture_output=True,
                          text=True, timeout=timeout)


def status(etcd: EtcdServer, service: str = "web") -> Any:
    """What ``livemod rollout status --json`` prints, read in this process (the tests poll
    it; one test runs the command itself)."""
    from livemod.etcd import EtcdClient, Rollout

    client = EtcdClient(etcd.url)
    try:
        return json.loads(json.dumps(Rollout(client, service).status()))
    finally:
        client.close()


def machines_at(etcd: EtcdServer, generation: int, count: int) -> bool:
    found = status(etcd)["machines"]
    return len(found) == count and all(
        m["generation"] == generation and m["state"] == "idle" and not m["drift"]
        for m in found.values())


def now() -> float:
    return time.monotonic()


__all__ = ["ETCD", "SKIP_REASON", "EtcdServer", "Machine", "Proxy", "machines_at", "now",
           "requires_etcd", "rollout", "status", "sys"]
