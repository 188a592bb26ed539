"""The control server in-process: a real Host, a real Unix socket, real clients.

Hostile clients are raw sockets that send what a buggy or malicious program would; after
each, the host and the other clients must be unaffected.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import stat
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import livemod
from livemod.control import (
    ControlClient,
    ControlServer,
    NotSupported,
    PermissionDenied,
    TooManyClients,
)
from livemod.control.protocol import encode, request

MODULES = Path(__file__).parent / "fixtures" / "cli_modules"


@pytest.fixture
def sockdir() -> Iterator[str]:
    # Short and under /tmp: a Unix socket path must fit in 107 bytes.
    folder = tempfile.mkdtemp(prefix="lmc")
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def host() -> Iterator[livemod.Host]:
    h = livemod.Host(modpath=[MODULES], timeout=2.0, name="ctl-test")
    yield h
    h.close(timeout=2.0)


@pytest.fixture
def server(host: livemod.Host, sockdir: str) -> Iterator[ControlServer]:
    with ControlServer(host, os.path.join(sockdir, "h.sock"), message_timeout=0.5) as srv:
        yield srv


@pytest.fixture
def client(server: ControlServer) -> Iterator[ControlClient]:
    with ControlClient(server.path, timeout=10.0) as c:
        yield c


class Raw:
    """A client that speaks bytes, not the protocol."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(5.0)
        self.sock.connect(path)
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self) -> dict[str, Any]:
        while b"\n" not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError(self.buf)
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        message: dict[str, Any] = json.loads(line)
        return message

    def closed_by_peer(self) -> bool:
        try:
            while self.sock.recv(65536):
                pass
        except ConnectionResetError:
            pass
        return True

    def close(self) -> None:
        self.sock.close()


def test_every_operation(client: ControlClient, host: livemod.Host) -> None:
    assert client.call("lsmod") == []
    row = client.call("modprobe", name="beta")
    assert row["name"] == "beta" and row["state"] == "LIVE"
    rows = {r["name"]: r for r in client.call("lsmod")}
    assert rows["alpha"]["used_by"] == ["beta"] and rows["alpha"]["version"] == "1.0.0"
    assert set(rows["alpha"]) >= {"name", "version", "state", "holds", "used_by"}

    row = client.call("insmod", path=str(MODULES / "holder.py"), params={"hold_for": "0"})
    assert row["name"] == "holder" and row["params"] == {"hold_for": 0.0}
    with pytest.raises(livemod.ModuleExists):
        client.call("insmod", path=str(MODULES / "holder.py"))
    with pytest.raises(livemod.InitError, match="failing on purpose"):
        client.call("insmod", path=str(MODULES / "failing.py"))
    with pytest.raises(livemod.ModuleNotFound):
        client.call("modprobe", name="no-such-module")

    assert client.call("modinfo", target="first")["name"] == "alpha"  # an alias
    info = client.call("modinfo", target=str(MODULES / "beta.py"))
    assert info["depends"] == ["alpha>=1.0"] and info["version"] == "2.1.0"

    listed = client.call("param", name="alpha")
    assert listed["greeting"] == {"type": "str", "default": "hello", "required": False,
                                  "writable": True, "doc": "word to greet with",
                                  "value": "hello"}
    assert listed["count"]["writable"] is False
    assert client.call("param", name="alpha", key="greeting")["value"] == "hello"
    assert client.call("param", name="alpha", key="greeting", value="hi")["value"] == "hi"
    assert host.lsmod()[0].params["greeting"] == "hi"
    with pytest.raises(livemod.ParamError):
        client.call("param", name="alpha", key="count", value="2")  # not writable
    with pytest.raises(livemod.ParamError):
        client.call("param", name="holder", key="hold_for", value="soon")  # not a float
    with pytest.raises(livemod.ParamError):
        client.call("param", name="alpha", key="nope")

    with pytest.raises(livemod.ModuleBusy) as busy:
        client.call("rmmod", name="alpha")
    assert busy.value.holders == ("module 'beta'",)
    assert client.call("modprobe", name="beta", remove=True) == {"removed": ["beta", "alpha"]}
    assert client.call("rmmod", name="holder", wait=True, timeout=1.0) == {"removed": "holder"}
    assert client.call("lsmod") == []

    kinds = [e["kind"] for e in client.call("log")]
    assert "load" in kinds and "load-failed" in kinds and "param" in kinds and "unload" in kinds
    assert len(client.call("log", limit=2)) == 2
    assert client.call("leaks") == []
    status = client.call("status")
    assert status["name"] == "ctl-test" and status["pid"] == os.getpid()
    assert status["modules"] == 0 and status["loads"] >= 3 and status["taints"] == []
    if getattr(host, "depmod", None) is None:
        with pytest.raises(NotSupported):
            client.call("depmod")
    else:
        client.call("depmod")


@pytest.mark.parametrize(
    ("op", "args", "words"),
    [
        ("bogus", {}, "unknown operation"),
        ("rmmod", {}, "missing argument 'name'"),
        ("rmmod", {"name": 3}, "must be str"),
        ("rmmod", {"name": "a", "wait": 1}, "must be bool"),
        ("rmmod", {"name": "a", "timeout": True}, "'timeout'"),
        ("lsmod", {"extra": 1}, "unknown argument"),
        ("log", {"limit": -1}, "negative"),
        ("insmod", {"path": "/x.py", "params": []}, "must be dict"),
    ],
)
def test_bad_requests_are_protocol_errors(
    client: ControlClient, op: str, args: dict[str, Any], words: str
) -> None:
    with pytest.raises(livemod.ProtocolError, match=words):
        client.call(op, **args)
    assert client.call("lsmod") == []  # the same connection still works


def test_rmmod_wait_streams_progress_and_never_blocks_other_clients(
    client: ControlClient, server: ControlServer
) -> None:
    client.call("insmod", path=str(MODULES / "holder.py"))
    client.call("param", name="holder", key="hold_for", value=1.0)
    with pytest.raises(livemod.ModuleBusy, match="packet pinned"):
        client.call("rmmod", name="holder")  # no wait: refused at once

    seen: list[tuple[str, Any]] = []
    done = threading.Event()

    def remove() -> None:
        with ControlClient(server.path) as other:
            seen.extend(other.stream("rmmod", name="holder", wait=True, timeout=5.0))
        done.set()

    t = threading.Thread(target=remove)
    t.start()
    states = []
    while not done.is_set():  # meanwhile, queries are answered at once
        started = time.monotonic()
        states += [r["state"] for r in client.call("lsmod")]
        assert time.monotonic() - started < 0.5
        time.sleep(0.02)
    t.join()
    assert "GOING" in states
    events = [p for kind, p in seen if kind == "event"]
    assert events and "waiting for: packet pinned for 1s" in events[0]["message"]
    assert seen[-1] == ("result", {"removed": "holder"})


def test_fifty_concurrent_clients(client: ControlClient, server: ControlServer) -> None:
    client.call("modprobe", name="alpha")
    barrier = threading.Barrier(50)
    failures: list[BaseException] = []

    def work(i: int) -> None:
        try:
            with ControlClient(server.path) as c:
                barrier.wait(5)
                for j in range(10):
                    if (i + j) % 3:
                        assert c.call("lsmod")[0]["name"] == "alpha"
                    else:
                        c.call("param", name="alpha", key="greeting", value=f"hi{i}")
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not failures
    assert client.call("param", name="alpha", key="greeting")["value"].startswith("hi")


def test_garbage_gets_an_error_and_the_connection_goes_on(server: ControlServer,
                                                          client: ControlClient) -> None:
    raw = Raw(server.path)
    raw.send(b"\x00\xffgarbage\n{\"v\":1}\n[1,2]\n")
    for _ in range(3):
        reply = raw.reply()
        assert reply["ok"] is False and reply["error"]["code"] == "protocol-error"
    raw.send(encode(request("abc", "lsmod", {})))
    assert raw.reply() == {"v": 1, "id": "abc", "ok": True, "result": []}
    assert client.call("status")["name"] == "ctl-test"
    raw.close()


def test_oversized_line_is_refused_and_closed(server: ControlServer,
                                              client: ControlClient) -> None:
    raw = Raw(server.path)
    with pytest.raises(OSError):  # the server hangs up before taking it all
        raw.send(b"x" * (server.max_message * 64))
    reply = raw.reply()
    assert reply["error"]["code"] == "protocol-error" and "limit" in reply["error"]["message"]
    assert raw.closed_by_peer()
    assert client.call("lsmod") == []


def test_half_sent_message_times_out(server: ControlServer, client: ControlClient) -> None:
    raw = Raw(server.path)
    raw.send(b'{"v": 1, "id": 1, "op": "ls')
    reply = raw.reply()  # after message_timeout (0.5 s)
    assert "incomplete message" in reply["error"]["message"]
    assert raw.closed_by_peer()
    assert client.call("lsmod") == []


def test_half_closed_client_still_gets_its_reply(server: ControlServer) -> None:
    raw = Raw(server.path)
    raw.send(encode(request(9, "status", {})))
    raw.sock.shutdown(socket.SHUT_WR)
    assert raw.reply()["result"]["name"] == "ctl-test"
    assert raw.closed_by_peer()


def test_log_follow_streams_new_events_in_order(client: ControlClient, host: livemod.Host,
                                                server: ControlServer) -> None:
    client.call("insmod", path=str(MODULES / "chatty.py"))
    follower = ControlClient(server.path, timeout=5.0)
    stream = follower.stream("log", follow=True, limit=1)
    assert next(stream)[1]["kind"] == "load"  # the backlog, limited to 1
    for i in range(20):
        host.set_param("chatty", "note", str(i))
    notes = [next(stream)[1]["data"]["value"] for _ in range(20)]
    assert notes == [str(i) for i in range(20)]
    stream.close()  # disconnects; the server unsubscribes
    follower.close()
    host.set_param("chatty", "note", "after")
    assert client.call("param", name="chatty", key="note")["value"] == "after"


def test_client_that_never_reads_is_dropped(host: livemod.Host, sockdir: str) -> None:
    path = os.path.join(sockdir, "small.sock")
    with ControlServer(host, path, max_output=16 * 1024) as srv:
        host.insmod(MODULES / "chatty.py")
        lazy = Raw(path)
        lazy.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        lazy.send(encode(request(1, "log", {"follow": True})))
        started = time.monotonic()
        for i in range(3000):  # ~1 MB of events: far more than the socket and the cap hold
            host.set_param("chatty", "note", f"{i:04d}" + "x" * 300)
        assert time.monotonic() - started < 20  # the host was never blocked by the reader
        with ControlClient(path) as other:
            assert other.call("lsmod")[0]["name"] == "chatty"
        lazy.sock.settimeout(10)
        assert lazy.closed_by_peer()  # what was buffered, then end of file: dropped
        lazy.close()
        assert srv.max_output == 16 * 1024


def test_socket_mode_and_default_path(host: livemod.Host, sockdir: str,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", sockdir)
    with ControlServer(host) as srv:
        assert srv.path == os.path.join(sockdir, "livemod", "ctl-test.sock")
        assert stat.S_IMODE(os.stat(os.path.dirname(srv.path)).st_mode) == 0o700
        st = os.stat(srv.path)
        assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
        assert os.listdir(os.path.dirname(srv.path)) == ["ctl-test.sock"]  # no temp left
        with ControlClient(srv.path) as c:
            assert c.call("status")["socket"] == srv.path
    assert not os.path.exists(srv.path)


def test_live_socket_is_not_stolen_and_stale_one_is_replaced(host: livemod.Host,
                                                             sockdir: str) -> None:
    path = os.path.join(sockdir, "one.sock")
    with ControlServer(host, path), pytest.raises(livemod.LivemodError, match="already listens"):
        ControlServer(host, path).start()
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)
    stale.close()  # a socket file nobody listens on
    with ControlServer(host, path), ControlClient(path) as c:
        assert c.call("lsmod") == []
    Path(path).write_text("not a socket")
    with pytest.raises(livemod.LivemodError, match="not a socket"):
        ControlServer(host, path).start()


def test_missing_socket_is_a_clear_error(sockdir: str) -> None:
    with pytest.raises(livemod.LivemodError, match="LIVEMOD_SOCKET"):
        ControlClient(os.path.join(sockdir, "none.sock")).call("lsmod")


def test_extra_clients_are_turned_away(host: livemod.Host, sockdir: str) -> None:
    path = os.path.join(sockdir, "few.sock")
    with ControlServer(host, path, max_clients=2) as srv:
        first, second = ControlClient(path), ControlClient(path)
        first.call("lsmod")
        second.call("lsmod")
        with pytest.raises(TooManyClients, match="maximum of 2"):
            ControlClient(path).call("lsmod")
        first.close()
        deadline = time.monotonic() + 5
        while True:  # the server notices the departure on its next turn
            try:
                ControlClient(path).call("lsmod")
                break
            except TooManyClients:
                assert time.monotonic() < deadline
                time.sleep(0.02)
        second.close()
        assert srv.max_clients == 2


def _nobody_connects(path: str) -> dict[str, Any]:
    """What a process running as nobody (uid 65534) gets when it sends ``lsmod``.

    A forked child (the interpreter's files may not be readable by nobody, so no exec): it
    drops to nobody, talks raw JSON, writes what it got to a pipe and exits at once.
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        result: dict[str, Any]
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(5)
            try:
                s.connect(path)
            except OSError as exc:
                result = {"connect": type(exc).__name__}
            else:
                # Refused and closed before the request arrived: the reason is queued.
                with contextlib.suppress(BrokenPipeError):
                    s.sendall(b'{"v":1,"id":1,"op":"lsmod"}\n')
                data = b""
                while not data.endswith(b"\n"):
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                result = json.loads(data or b"{}")
        except BaseException as exc:
            result = {"child-error": repr(exc)}
        os.write(write_end, json.dumps(result).encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    answer: dict[str, Any] = json.loads(data)
    return answer


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a client as another user")
def test_peer_of_another_uid_is_refused(host: livemod.Host, sockdir: str) -> None:
    os.chmod(sockdir, 0o755)
    path = os.path.join(sockdir, "guarded.sock")
    with ControlServer(host, path):
        # First wall: the socket file is 0600.
        assert _nobody_connects(path) == {"connect": "PermissionError"}
        # Second wall: even when the file mode is loosened, SO_PEERCRED refuses the peer.
        os.chmod(path, 0o666)
        reply = _nobody_connects(path)
        assert reply["id"] is None and reply["error"]["code"] == "permission-denied"
        assert "allow_users" in reply["error"]["message"]
        with ControlClient(path) as c:  # the host's own user is unaffected
            assert c.call("lsmod") == []
    with ControlServer(host, path, allow_users=["nobody"]):
        os.chmod(path, 0o666)
        assert _nobody_connects(path)["result"] == []
    with ControlServer(host, path, allow_groups=[65534]):
        os.chmod(path, 0o666)
        assert _nobody_connects(path)["result"] == []


def test_permission_denied_reply_becomes_the_exception() -> None:
    from livemod.control.protocol import error_from_wire

    exc = error_from_wire({"code": "permission-denied", "message": "no"})
    assert isinstance(exc, PermissionDenied) and isinstance(exc, PermissionError)
