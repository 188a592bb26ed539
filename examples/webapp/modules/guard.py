"""Request middleware: refuses paths under /private before any route sees them.

Middleware contract (hook ``http.request``): ``before(request)`` returns None to let the
request through, or a response to answer it at once.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

__livemod__ = {"name": "guard", "version": "1.0.0", "license": "MIT"}


def before(request: Request) -> Response | None:
    if request.url.path.startswith("/private"):
        return PlainTextResponse("forbidden\n", status_code=403)
    return None


def init(mod: Any) -> None:
    mod.hook("http.request").add(before)
