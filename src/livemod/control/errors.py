"""Errors that only the control plane raises (the socket, not a module, went wrong).

Like :mod:`livemod.errors` this is a leaf: it imports nothing of livemod but the base class,
so the CLI can map these to exit codes without loading the server.
"""

from __future__ import annotations

from ..errors import LivemodError

__all__ = ["HostUnreachable", "NotSupported", "PermissionDenied", "TooManyClients"]


class HostUnreachable(LivemodError, ConnectionError):
    """No host answers on the socket: it does not exist, nobody listens, the connection
    broke, or the host did not reply in time. Nothing was done (or it is unknown whether
    it was, when the connection broke mid-request)."""

    code = "host-unreachable"


class PermissionDenied(LivemodError, PermissionError):
    """The host refused this client: its user is neither the host's user, nor root, nor in
    the server's ``allow_users`` / ``allow_groups``. Unlike :class:`HostUnreachable`, a host
    is running and answered."""

    code = "permission-denied"


class NotSupported(LivemodError):
    """The host understood the request but cannot do it: the operation needs a feature this
    host does not have (for example ``depmod`` on a host without a module index)."""

    code = "not-supported"


class TooManyClients(LivemodError):
    """The host already serves its maximum number of clients; retry later. The host is
    fine and nothing was done."""

    code = "too-many-clients"
