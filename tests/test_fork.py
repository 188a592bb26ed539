"""Fork safety with a real fork(): a host inherited by a child refuses changes there, and
the parent's control socket stays reachable whatever the child does."""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import livemod
from livemod.control import ControlClient, ControlServer

MODULES = Path(__file__).parent / "fixtures" / "service"


def in_child(body: Callable[[], object]) -> tuple[int, str]:
    """Run ``body`` in a forked child; returns (exit code, what it wrote to its pipe)."""
    r, w = os.pipe()
    with warnings.catch_warnings():  # "multi-threaded, fork() may deadlock": the point
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 0
        try:
            os.close(r)
            out = body()
            os.write(w, str(out).encode())
        except BaseException as exc:
            os.write(w, f"{type(exc).__name__}: {exc}".encode())
            code = 1
        finally:
            os._exit(code)
    os.close(w)
    chunks = []
    while chunk := os.read(r, 65536):
        chunks.append(chunk)
    os.close(r)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), b"".join(chunks).decode()


@pytest.fixture
def sockdir() -> Iterator[str]:
    folder = tempfile.mkdtemp(prefix="lmfork")
    yield folder
    shutil.rmtree(folder)


def test_forked_child_refuses_every_change_but_answers_queries() -> None:
    with livemod.Host(name="forky") as host:
        host.insmod(MODULES / "greet_v1.py")

        def child() -> str:
            refused = []
            for change in (lambda: host.insmod(MODULES / "extra.py"),
                           lambda: host.modprobe("extra"),
                           lambda: host.rmmod("greet"),
                           lambda: host.replace("greet", MODULES / "greet_v2.py"),
                           lambda: host.set_param("greet", "greeting", "hi")):
                try:
                    change()
                except livemod.HostForked as exc:
                    assert exc.owner_pid == host._table.owner.pid, exc.owner_pid
                    assert f"belongs to pid {exc.owner_pid}" in str(exc), str(exc)
                    assert "build a new one in the child" in str(exc), str(exc)
                    refused.append(exc.code)
            host.close()  # runs no module code in the child, and does not raise
            # Queries still answer, and the module is still the parent's, LIVE.
            rows = [(r.name, r.state.name) for r in host.lsmod()]
            return f"{refused} {rows} {host.hook('greet')('x')}"

        code, out = in_child(child)
        assert code == 0, out
        assert out == ("['host-forked', 'host-forked', 'host-forked', 'host-forked', "
                       "'host-forked'] [('greet', 'LIVE')] ['hello x from 1.0.0']")
        # The parent was not touched: its module is LIVE and can still be changed.
        assert [r.state.name for r in host.lsmod()] == ["LIVE"]
        host.replace("greet", MODULES / "greet_v2.py")
        assert host.hook("greet")("y") == ["hello y from 2.0.0"]


def test_a_new_host_in_the_child_works() -> None:
    with livemod.Host(name="parent") as host:
        host.insmod(MODULES / "greet_v1.py")

        def child() -> object:
            with livemod.Host(name="child") as mine:
                mine.insmod(MODULES / "greet_v2.py")
                return mine.hook("greet")("c")

        assert in_child(child) == (0, "['hello c from 2.0.0']")


def test_child_closing_an_inherited_server_leaves_the_parent_reachable(sockdir: str) -> None:
    path = os.path.join(sockdir, "p.sock")
    with livemod.Host(name="served") as host, ControlServer(host, path) as server:
        host.insmod(MODULES / "greet_v1.py")
        assert server.owner_pid == os.getpid()

        def child() -> str:
            server.close()  # the child's copy: unlinks nothing
            try:
                server.start()
            except livemod.HostForked as exc:
                return f"{os.path.exists(path)} {exc.code}"
            return "started"

        assert in_child(child) == (0, "True host-forked")
        assert os.path.exists(path)
        # Every connection reaches the parent (the child closed its copy of the listener).
        for _ in range(5):
            with ControlClient(path, timeout=5) as client:
                assert client.call("status")["server_pid"] == os.getpid()
    assert not os.path.exists(path)  # the owner's close does remove it


def test_control_true_host_in_child_closes_without_unlinking(sockdir: str) -> None:
    os.environ["XDG_RUNTIME_DIR"], saved = sockdir, os.environ.get("XDG_RUNTIME_DIR")
    try:
        with livemod.Host(name="ctl", control=True) as host:
            path = host.control.path
            assert path.startswith(sockdir)

            def child() -> object:
                host.close()
                return os.path.exists(path)

            assert in_child(child) == (0, "True")
            with ControlClient(path, timeout=5) as client:
                assert client.call("status")["pid"] == os.getpid()
        assert not os.path.exists(path)
    finally:
        if saved is None:
            del os.environ["XDG_RUNTIME_DIR"]
        else:
            os.environ["XDG_RUNTIME_DIR"] = saved
