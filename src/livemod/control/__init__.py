"""The control plane: a host's Unix socket and the client the ``livemod`` command uses.

``ControlServer(host).start()`` serves the host; ``ControlClient(path).call("lsmod")`` talks
to it. The wire format is described in :mod:`livemod.control.protocol`, the operations in
:mod:`livemod.control.ops`. Only the public ``Host`` API is used on the server side.
"""

from __future__ import annotations

from .client import ControlClient, StreamItem
from .errors import HostUnreachable, NotSupported, PermissionDenied, TooManyClients
from .paths import ENV_VAR, default_socket_dir, default_socket_path, find_socket
from .protocol import MAX_MESSAGE, VERSION, Decoder
from .server import ControlServer

__all__ = [
    "ENV_VAR",
    "MAX_MESSAGE",
    "VERSION",
    "ControlClient",
    "ControlServer",
    "Decoder",
    "HostUnreachable",
    "NotSupported",
    "PermissionDenied",
    "StreamItem",
    "TooManyClients",
    "default_socket_dir",
    "default_socket_path",
    "find_socket",
]
