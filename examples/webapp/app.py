"""A Starlette application whose routes and middleware are livemod modules.

On startup (the Starlette lifespan) the app builds a ``livemod.Host`` on
``examples/webapp/modules``, loads the modules named in ``MODULES`` and, when the control
plane is available, serves the host on a Unix socket so the ``livemod`` command can upgrade
a route while requests keep flowing.

Every request goes through three hooks (the contract modules implement):

``http.request``  ``before(request) -> Response | None``: middleware; the first response
                  answers the request at once (a guard, a rate limit).
``http.route``    ``route(request) -> Response | Awaitable[Response] | None``: a route
                  module answers the paths it owns and returns None for the rest; the first
                  response wins, none at all is a 404.
``http.response`` ``after(request, response) -> None``: middleware that may change the
                  response in place (headers, timing).

Each hook call is one lock-free dispatch over the hook's current snapshot, so an upgrade
switches a route between two requests, never inside one: a request that started on v1
finishes on v1, and the host waits for it before v1 exits.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Iterable, Sequence
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

import livemod

__all__ = ["MODULES", "MODULES_DIR", "app", "create_app"]

MODULES_DIR = Path(__file__).parent / "modules"
#: Loaded at startup, in order (hello_v2.py is there to upgrade to).
MODULES = ("guard.py", "headers.py", "hello_v1.py")
#: Set it to a socket path, or to "off" to run without a control socket.
SOCKET_ENV = "LIVEMOD_WEBAPP_SOCKET"

BEFORE, ROUTE, AFTER = "http.request", "http.route", "http.response"
_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def _first(results: Iterable[Any]) -> Any:
    for result in results:
        if result is not None:
            return result
    return None


async def dispatch(request: Request) -> Response:
    """The catch-all route: middleware hooks around the route hook."""
    before, route, after = request.app.state.hooks
    request.state.started = _now()
    response = _first(await before.acall(request)) if len(before) else None
    if response is None:
        response = _first(await route.acall(request))
    if response is None:
        response = PlainTextResponse(f"no route for {request.url.path}\n", status_code=404)
    if len(after):
        await after.acall(request, response)
    return response


async def lsmod(request: Request) -> Response:
    """GET /_livemod/modules: what is loaded, for people poking at the demo."""
    rows = request.app.state.host.lsmod()
    return JSONResponse([{"name": r.name, "version": r.version, "state": r.state.name}
                         for r in rows])


def _now() -> float:
    import time

    return time.perf_counter()


def _control(socket: str | None) -> bool | str:
    """``Host(control=...)`` for a ``socket`` setting: the default path, a path, or off."""
    if socket == "off":
        return False
    return socket or True


def create_app(
    *,
    modules: Sequence[str | os.PathLike[str]] = MODULES,
    modules_dir: str | os.PathLike[str] = MODULES_DIR,
    socket: str | None = None,
    name: str = "webapp",
) -> Starlette:
    """Build the app. ``modules`` are paths (relative ones to ``modules_dir``);
    ``socket`` is the control socket path (default: ``$LIVEMOD_WEBAPP_SOCKET``, else the
    host's default path; ``"off"`` for none)."""
    folder = Path(modules_dir)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # control: the host serves its control socket, so `livemod lsmod` and `livemod
        # upgrade` reach it; host.aclose() stops serving before anything is unloaded.
        host = livemod.Host(modpath=[folder], name=name, timeout=10.0,
                            control=_control(socket or os.environ.get(SOCKET_ENV)))
        try:
            for module in modules:
                await host.ainsmod(folder / module)
            app.state.host = host
            app.state.hooks = (host.hook(BEFORE), host.hook(ROUTE), host.hook(AFTER))
            yield
        finally:
            await host.aclose()

    return Starlette(
        routes=[
            Route("/_livemod/modules", lsmod, methods=["GET"]),
            Route("/{path:path}", dispatch, methods=_METHODS),
        ],
        lifespan=lifespan,
    )


app = create_app()
