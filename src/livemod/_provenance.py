"""Which loaded module made this call: one lookup on the caller frame's builtins.

Every namespace livemod executes gets a ``__builtins__`` dict of livemod's own (for its
``__import__``), and a function keeps the builtins of the globals it was defined in; so do
code ``exec``'d from a module frame and jinja2-style templates (exec takes the caller
frame's builtins). The builtins dict carries, under one private key, a resolver from a frame
to the module's record. Interposed registration APIs (``_trampolines``) use it to attribute
a registration to the module that made it, at the cost of one dict lookup per call.

The resolver lives *in* the dict rather than in a table keyed by ``id()``: its lifetime is
the dict's, so an id reused after a host is gone can never resolve to a stranger.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import FrameType
from typing import Any, Final

#: The module record (``_instance.Instance``); typed loosely so that this leaf imports
#: nothing of livemod (the instance module is above it).
Instance = Any

__all__ = ["KEY", "by_globals", "caller", "mark", "owner_of", "owner_of_namespace"]

#: The key under which a livemod builtins dict keeps its resolver.
KEY: Final = "__livemod_provenance__"

Resolver = Callable[[FrameType], Any]


def mark(builtins: dict[str, Any], resolver: Resolver) -> None:
    """Give a builtins dict made by livemod its resolver (per host or per module)."""
    builtins[KEY] = resolver


def by_globals(by_private: Mapping[str, Instance]) -> Resolver:
    """A resolver for builtins shared by a host's modules: the frame's ``__name__`` (or
    the package that owns it) in the host's table of private names."""

    def resolve(frame: FrameType) -> Instance | None:
        g = frame.f_globals
        name = dict.get(g, "__name__") if type(g) is dict else None
        while type(name) is str and name:
            inst = by_private.get(name)
            if inst is not None:
                return inst
            name = name.rpartition(".")[0]
        return None

    return resolve


def owner_of(frame: FrameType | None) -> Instance | None:
    """The module whose code runs in ``frame``, or None (not livemod module code)."""
    if frame is None:
        return None
    builtins = frame.f_builtins
    resolver = dict.get(builtins, KEY) if type(builtins) is dict else None
    return resolver(frame) if resolver is not None else None


@dataclass(frozen=True, slots=True)
class _Globals:
    """What a resolver reads of a frame, for a namespace without one (a module's dict)."""

    f_globals: dict[str, Any]


def owner_of_namespace(namespace: dict[str, Any]) -> Instance | None:
    """The module a namespace executed by livemod belongs to, or None."""
    builtins = dict.get(namespace, "__builtins__")
    resolver = dict.get(builtins, KEY) if type(builtins) is dict else None
    return resolver(_Globals(namespace)) if resolver is not None else None


def caller(depth: int = 2) -> Instance | None:
    """The module that called the function that calls this (``depth`` frames up)."""
    try:
        frame: FrameType | None = sys._getframe(depth)
    except ValueError:
        return None
    try:
        return owner_of(frame)
    finally:
        del frame
