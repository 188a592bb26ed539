"""Where a service's workers keep their sockets, its desired set and its decisions.

``<socket dir>/<service>/`` (the per-user 0700 folder of :mod:`livemod.control.paths`)
holds one ``<pid>.sock`` per worker, ``desired.json`` and ``decisions/<txn>.json``. A
socket's owner is the pid in its name: a socket whose pid is dead is stale and removed by
whoever lists the workers; one whose pid is alive is never touched by anyone else.
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass

from ..control.paths import default_socket_dir, ensure_private_dir
from ..errors import LivemodError

__all__ = ["WorkerSocket", "check_service_name", "decisions_dir", "desired_path", "pid_alive",
           "service_dir", "socket_path", "worker_sockets"]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclass(frozen=True)
class WorkerSocket:
    """One worker of a service as found on disk: its pid and its socket path."""

    pid: int
    path: str


def check_service_name(service: str) -> str:
    """``service`` if it is usable as a folder name, else a clear error."""
    if not isinstance(service, str) or not _NAME.fullmatch(service):
        raise LivemodError(f"service name {service!r} is not usable: use letters, digits, "
                           f"'.', '_' and '-' (at most 64, not starting with '.' or '-')")
    return service


def service_dir(service: str, *, create: bool = False) -> str:
    """``<socket dir>/<service>``; with ``create``, made 0700 (and refused if not ours)."""
    folder = os.path.join(default_socket_dir(), check_service_name(service))
    if create:
        ensure_private_dir(os.path.dirname(folder))
        ensure_private_dir(folder)
    return folder


def socket_path(service: str, pid: int | None = None) -> str:
    """The socket of worker ``pid`` (default: this process)."""
    return os.path.join(service_dir(service), f"{os.getpid() if pid is None else pid}.sock")


def desired_path(service: str) -> str:
    return os.path.join(service_dir(service), "desired.json")


def decisions_dir(service: str) -> str:
    return os.path.join(service_dir(service), "decisions")


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists (a zombie counts as dead: it serves nothing)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError), open(f"/proc/{pid}/stat", "rb") as f:
        return f.read().rsplit(b")", 1)[-1].split()[0] != b"Z"
    return True


def worker_sockets(service: str, *, clean: bool = True) -> tuple[list[WorkerSocket], list[int]]:
    """The workers of ``service`` whose pid is alive, by pid; and the pids whose sockets
    were stale (dead pid), which are removed when ``clean``."""
    folder = service_dir(service)
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return [], []
    live: list[WorkerSocket] = []
    stale: list[int] = []
    for name in names:
        stem, ext = os.path.splitext(name)
        if ext != ".sock" or not stem.isdigit():
            continue
        pid, path = int(stem), os.path.join(folder, name)
        if pid_alive(pid):
            live.append(WorkerSocket(pid, path))
        else:
            stale.append(pid)
            if clean:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
    return sorted(live, key=lambda w: w.pid), sorted(stale)
