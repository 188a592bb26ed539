"""Binding a control socket so that nobody else can ever reach it, and removing it again.

``bind(2)`` creates the socket file with the process umask, and a ``chmod`` afterwards would
leave a window in which another user could connect. So the socket is bound inside a fresh
0700 folder next to its final path, chmod-ed to 0600 there, and then hard-linked to the
final path -- which, unlike ``rename``, fails instead of replacing a socket another host
bound meanwhile. On close it is removed only if the path still names our socket file.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import tempfile

from ..errors import LivemodError
from .paths import MAX_PATH_BYTES, ensure_private_dir

__all__ = ["bind_private", "clear_stale", "unlink_if_same"]

Identity = tuple[int, int]  # (st_dev, st_ino) of the socket file


def bind_private(path: str, *, private_folder: bool) -> tuple[socket.socket, Identity]:
    """A listening socket at ``path`` (mode 0600), and the identity of its file.

    Args:
        private_folder: the folder is the default per-user one: create it 0700 and refuse
            it if it is not ours. Otherwise a missing folder is created 0700.
    Raises:
        LivemodError: the path is in use, not a socket, or too long.
    """
    parent = os.path.dirname(path)
    if private_folder:
        ensure_private_dir(parent)
    else:
        os.makedirs(parent, mode=0o700, exist_ok=True)
    clear_stale(path)
    private = tempfile.mkdtemp(prefix=".lm-", dir=parent)  # mode 0700
    temp = os.path.join(private, "s")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        for candidate in (path, temp):
            if len(os.fsencode(candidate)) > MAX_PATH_BYTES:
                raise LivemodError(f"socket path {candidate} is longer than {MAX_PATH_BYTES} "
                                   f"bytes, too long for a Unix socket; choose a shorter one")
        sock.bind(temp)
        os.chmod(temp, 0o600)
        try:
            os.link(temp, path)
        except FileExistsError:
            raise LivemodError(f"{path} appeared while this host was starting; another "
                               f"host uses it (choose another --socket)") from None
        except OSError:
            os.rename(temp, path)  # a filesystem without hard links
        st = os.stat(path)
        sock.listen(128)
    except BaseException:
        sock.close()
        raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        os.rmdir(private)
    return sock, (st.st_dev, st.st_ino)


def clear_stale(path: str) -> None:
    """Remove a socket file nobody listens on (left by a host that died).

    Raises:
        LivemodError: ``path`` is not a socket, or a live host listens on it.
    """
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise LivemodError(f"{path} exists and is not a socket; remove it or choose "
                           f"another --socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(path)
    except OSError:
        os.unlink(path)
        return
    finally:
        probe.close()
    raise LivemodError(f"another host already listens on {path} (stop it, or choose "
                       f"another --socket)")


def unlink_if_same(path: str, identity: Identity | None) -> None:
    """Remove ``path`` if it is still the socket file ``identity`` names."""
    with contextlib.suppress(OSError):
        st = os.lstat(path)
        if (st.st_dev, st.st_ino) == identity:
            os.unlink(path)
