"""``Host(control=True)``: a program serves its own control socket, the documented way."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator

import pytest

import livemod
from livemod.control import ControlClient, HostUnreachable


@pytest.fixture
def folder() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="lmctl")  # short: socket paths must fit 107 bytes
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_control_true_serves_the_default_path_and_close_stops_it(
        folder: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", folder)
    monkeypatch.delenv("LIVEMOD_SOCKET", raising=False)
    modules = os.path.join(os.path.dirname(livemod.__file__), "examples")
    host = livemod.Host([modules], name="served", control=True)
    try:
        path = os.path.join(folder, "livemod", "served.sock")
        assert host.control.path == path
        host.modprobe("log")
        # The livemod command finds it with no --socket: the only socket in the folder.
        r = subprocess.run([sys.executable, "-m", "livemod.cli", "lsmod", "--json"],
                           capture_output=True, text=True, timeout=60,
                           env={**os.environ, "XDG_RUNTIME_DIR": folder})
        assert r.returncode == 0, r.stderr
        assert '"name": "log"' in r.stdout
    finally:
        host.close()
    assert not os.path.exists(path)  # close() stopped serving and removed the socket
    assert host.lsmod() == []


def test_control_path_and_default_off(folder: str) -> None:
    path = os.path.join(folder, "x.sock")
    with livemod.Host(control=path) as host, ControlClient(path) as client:
        assert client.call("status")["name"] == host.name
    with pytest.raises(HostUnreachable):
        ControlClient(path).call("status")
    with livemod.Host() as plain:
        assert plain.control is None
