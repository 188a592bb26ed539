"""Who may talk to a host: peer credentials from the kernel, checked against a policy.

The socket's mode (0600) already keeps other users out; the credential check is the second
wall, and the one that lets an operator admit more users or groups without loosening the
file mode. ``SO_PEERCRED`` reports the peer's uid and gid as they were at ``connect``; the
kernel fills them in, so a client cannot lie about them.
"""

from __future__ import annotations

import grp
import os
import pwd
import socket
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from .errors import PermissionDenied

__all__ = ["Peer", "PeerPolicy", "peer_credentials"]

_UCRED: Final = struct.Struct("3i")  # struct ucred: pid, uid, gid


@dataclass(frozen=True, slots=True)
class Peer:
    """The process at the other end of a connection."""

    pid: int
    uid: int
    gid: int


def peer_credentials(sock: socket.socket) -> Peer:
    """The kernel's record of who connected ``sock`` (a connected AF_UNIX socket)."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    pid, uid, gid = _UCRED.unpack(raw)
    return Peer(pid, uid, gid)


def _uid(user: str | int) -> int:
    if isinstance(user, int) or user.isdigit():
        return int(user)
    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError:
        raise ValueError(f"allow_users: no user named {user!r} on this system") from None


def _gid(group: str | int) -> int:
    if isinstance(group, int) or group.isdigit():
        return int(group)
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise ValueError(f"allow_groups: no group named {group!r} on this system") from None


class PeerPolicy:
    """Admits the host's own user, root, and the configured users and groups.

    Names are resolved once, when the policy is made (an unknown name is a ``ValueError``
    then, not a silent never-match later); group membership is looked up per connection,
    so adding a user to an allowed group takes effect without restarting the host.
    """

    def __init__(
        self, allow_users: Iterable[str | int] = (), allow_groups: Iterable[str | int] = ()
    ) -> None:
        self.uids = frozenset({os.geteuid(), 0, *(_uid(u) for u in allow_users)})
        self.gids = frozenset(_gid(g) for g in allow_groups)

    def allows(self, peer: Peer) -> bool:
        """Whether ``peer`` may send requests."""
        if peer.uid in self.uids or peer.gid in self.gids:
            return True
        if not self.gids:
            return False
        try:
            name = pwd.getpwuid(peer.uid).pw_name
        except KeyError:
            return False
        for gid in self.gids:
            try:
                if name in grp.getgrgid(gid).gr_mem:
                    return True
            except KeyError:
                continue
        return False

    def refusal(self, peer: Peer) -> PermissionDenied:
        """The error a refused peer is sent before it is disconnected."""
        return PermissionDenied(
            f"permission denied: uid {peer.uid} (pid {peer.pid}) may not control this host, "
            f"which runs as uid {os.geteuid()}; run as that user or root, or add the user "
            f"to allow_users (or a group of theirs to allow_groups) when starting the host"
        )
