"""``Host(control=...)``: start the control server for a host.

The control plane is an outer layer: it drives the host through the public API only, and
the host never imports it (the layering test keeps imports one way). So the host reaches it
here, by name, and only when a program asks for a control socket.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

__all__ = ["serve_control", "stop"]


def serve_control(host: object, control: bool | str | os.PathLike[str]) -> Any:
    """For ``Host(control=...)``: None when ``control`` is false, else a started
    ``livemod.control.ControlServer`` on the default path (``True``) or the path given."""
    if not control:
        return None
    server = importlib.import_module("livemod.control.server").ControlServer
    return server(host, None if control is True else os.fspath(control)).start()


def stop(server: Any) -> None:
    """Stop ``server`` (from :func:`serve_control`) if there is one; idempotent."""
    if server is not None:
        server.close()
