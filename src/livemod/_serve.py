"""``Host(control=...)``: start the control server for a host.

The control plane is an outer layer: it drives the host through the public API only, and
the host never imports it (the layering test keeps imports one way). So the host reaches it
here, by name, and only when a program asks for a control socket.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["serve_control"]


def serve_control(host: object, path: str | None) -> Any:
    """A started ``livemod.control.ControlServer`` for ``host`` on ``path`` (None: default)."""
    server = importlib.import_module("livemod.control.server").ControlServer
    return server(host, path).start()
