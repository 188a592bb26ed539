"""Response middleware: stamps every response with how long the app took.

Middleware contract (hook ``http.response``): ``after(request, response)`` may change the
response in place; the app set ``request.state.started`` (``time.perf_counter()``).
"""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

__livemod__ = {"name": "headers", "version": "1.0.0", "license": "MIT"}


def after(request: Request, response: Response) -> None:
    elapsed = (time.perf_counter() - request.state.started) * 1000
    response.headers["server-timing"] = f"app;dur={elapsed:.2f}"
    response.headers["x-powered-by"] = "livemod"


def init(mod: Any) -> None:
    mod.hook("http.response").add(after)
