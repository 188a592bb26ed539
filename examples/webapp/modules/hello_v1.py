"""Hello routes, version 1: GET /hello and a slow GET /slow.

Route contract (hook ``http.route``): ``route(request)`` returns None when the path is not
one of ours, else the response (or a coroutine giving it). Every body names the version
that served it; the request count is handed over to the next version on upgrade.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

__livemod__ = {
    "name": "hello",
    "version": "1.0.0",
    "license": "MIT",
    "params": {
        "greeting": {"type": "str", "default": "hello", "writable": True,
                     "doc": "the word /hello greets with"},
        "slow_seconds": {"type": "float", "default": 0.5, "writable": True,
                         "doc": "how long /slow takes"},
    },
}

VERSION = "v1"
_state: dict[str, Any] = {"served": 0, "active": 0, "params": None}


async def hello(request: Request) -> Response:
    _state["served"] += 1
    text = f"{_state['params'].greeting} from {VERSION} (request {_state['served']})\n"
    return PlainTextResponse(text, headers={"x-hello-version": VERSION})


async def slow(request: Request) -> Response:
    _state["active"] += 1
    try:
        await asyncio.sleep(_state["params"].slow_seconds)
    finally:
        _state["active"] -= 1
    return PlainTextResponse(f"slow from {VERSION}\n", headers={"x-hello-version": VERSION})


ROUTES: dict[str, Callable[[Request], Awaitable[Response]]] = {"/hello": hello, "/slow": slow}


def route(request: Request) -> Awaitable[Response] | None:
    handler = ROUTES.get(request.url.path)
    return None if handler is None else handler(request)


def handover(mod: Any) -> dict[str, int]:
    return {"served": _state["served"]}


def init(mod: Any) -> None:
    _state["params"] = mod.params
    _state["served"] = (mod.handover_state or {}).get("served", 0)
    mod.hook("http.route").add(route)
    mod.export("active", lambda: _state["active"])
