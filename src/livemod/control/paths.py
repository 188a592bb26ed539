"""Where control sockets live, and how a client finds the one to talk to.

The default folder is ``$XDG_RUNTIME_DIR/livemod`` (a per-user tmpfs the login manager makes
private), else ``<tempdir>/livemod-<uid>``. The folder is mode 0700 and must belong to us:
in a shared temp dir somebody else could have made it first, to watch or replace our
sockets, so one that is not ours (or is a symlink) is refused rather than used.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import stat
import tempfile
import time
from collections.abc import Callable

from ..errors import LivemodError
from .errors import HostUnreachable

__all__ = ["ENV_VAR", "default_socket_dir", "default_socket_path", "ensure_private_dir",
           "find_socket", "is_stale", "not_a_socket"]

#: Environment variable naming the socket the ``livemod`` command talks to.
ENV_VAR = "LIVEMOD_SOCKET"
#: ``sun_path`` holds 108 bytes on Linux, including the terminating NUL.
MAX_PATH_BYTES = 107


def default_socket_dir() -> str:
    """The per-user folder holding the sockets of hosts started without a path."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime):
        return os.path.join(runtime, "livemod")
    return os.path.join(tempfile.gettempdir(), f"livemod-{os.geteuid()}")


def default_socket_path(host_name: str) -> str:
    """``<default folder>/<host name>.sock``, with the name made safe for a file name."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", host_name).lstrip(".") or "host"
    return os.path.join(default_socket_dir(), f"{safe}.sock")


def ensure_private_dir(path: str) -> None:
    """Create ``path`` with mode 0700 if missing; refuse one that is not ours.

    Raises:
        LivemodError: it is a symlink, not a folder, or belongs to another user.
    """
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except FileNotFoundError:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        os.mkdir(path, 0o700)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise LivemodError(f"socket folder {path} is not a folder (or is a symlink); "
                           f"remove it or choose another path with --socket")
    if st.st_uid != os.geteuid():
        raise LivemodError(f"socket folder {path} belongs to uid {st.st_uid}, not to us "
                           f"(uid {os.geteuid()}); remove it or choose another --socket")
    if st.st_mode & 0o077:
        os.chmod(path, 0o700)


def find_socket(explicit: str | None = None, *,
                on_stale: Callable[[str], object] | None = None) -> str:
    """The socket to talk to: ``explicit`` (``--socket``), else ``$LIVEMOD_SOCKET``, else the
    only live socket in the default folder.

    Sockets in the default folder that nobody listens on (left by a host that was killed)
    are removed, each reported to ``on_stale``, so a dead host never hides a live one.

    Raises:
        HostUnreachable: no live socket, or several and nothing says which.
    """
    if explicit:
        return explicit
    env = os.environ.get(ENV_VAR)
    if env:
        return env
    folder = default_socket_dir()
    try:
        found = sorted(
            os.path.join(folder, n) for n in os.listdir(folder) if n.endswith(".sock")
        )
    except OSError:
        found = []
    live = []
    for path in found:
        if is_stale(path):
            with contextlib.suppress(OSError):
                os.unlink(path)
                if on_stale is not None:
                    on_stale(path)
        else:
            live.append(path)
    if len(live) == 1:
        return live[0]
    if not live:
        raise HostUnreachable(
            f"no host socket in {folder}: is `livemod host` running? "
            f"set {ENV_VAR} or --socket PATH"
        )
    raise HostUnreachable(
        f"several hosts listen in {folder} ({', '.join(os.path.basename(p) for p in live)}); "
        f"choose one with --socket PATH or {ENV_VAR}"
    )


#: A socket younger than this may be one a host has bound and not yet listens on.
_STALE_AFTER = 2.0


def is_stale(path: str) -> bool:
    """Whether ``path`` is a socket of ours that nobody listens on (connection refused) and
    that is not brand new (a host binds first and listens a moment later)."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    if not stat.S_ISSOCK(st.st_mode) or st.st_uid != os.geteuid():
        return False
    if time.time() - st.st_mtime < _STALE_AFTER:
        return False
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        return True
    except OSError:
        return False
    finally:
        probe.close()
    return False


def not_a_socket(path: str) -> str | None:
    """Why ``path`` cannot be a control socket (a folder, a regular file), or None."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if stat.S_ISDIR(st.st_mode):
        inside = sorted(n for n in os.listdir(path) if n.endswith(".sock")) if os.access(
            path, os.R_OK) else []
        hint = f" (it holds {', '.join(inside)})" if inside else ""
        return f"{path} is a folder, not a socket{hint}: give the socket file itself"
    if not stat.S_ISSOCK(st.st_mode):
        kind = "a regular file" if stat.S_ISREG(st.st_mode) else "not a socket"
        return f"{path} is {kind}, not a socket: give the path a host listens on"
    return None
