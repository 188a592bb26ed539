"""``livemod host``: run a host in the foreground, serving its control socket.

It prints one line when it is ready (``livemod host NAME (pid N) ready on PATH``, flushed,
for whoever started it to wait for). SIGTERM or SIGINT stop it cleanly: the socket stops
serving, every module is unloaded, dependents first (``Host.close``), the socket file is
removed, and the exit code is 0.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import livemod

from ..control import ControlServer

try:
    from .. import config as _config
except ImportError:  # pragma: no cover - a trimmed installation
    _config = None  # type: ignore[assignment]
from ..control.records import event_to_dict
from . import _render

__all__ = ["run"]


@dataclass
class _Settings:
    """What the host is started with: the command line over the configuration file."""

    host_kwargs: dict[str, Any] = field(default_factory=dict)
    socket: str | None = None
    allow_users: list[str | int] = field(default_factory=list)
    allow_groups: list[str | int] = field(default_factory=list)
    #: (module, params, soft dependencies before, after), modprobe'd in order at start.
    load: list[tuple[str, Mapping[str, object], tuple[str, ...], tuple[str, ...]]] = field(
        default_factory=list)


def _settings(args: argparse.Namespace) -> _Settings:
    s = _Settings()
    cfg: Any = None
    if args.config:
        if _config is None:  # pragma: no cover - a trimmed installation
            raise livemod.LivemodError(
                f"--config {args.config}: this installation has no configuration support "
                f"(livemod.config); use --modpath and --load instead")
        cfg = _config.load_config(args.config)
        s.host_kwargs = cfg.host.host_kwargs()
        s.socket = cfg.host.socket
        s.allow_users = list(cfg.host.allow_users)
        s.allow_groups = list(cfg.host.allow_groups)
        s.load = [(p.name, p.params, p.pre, p.post) for p in cfg.load_plan()]
    kw = s.host_kwargs
    kw["modpath"] = [*kw.get("modpath", ()), *args.modpath]
    kw["name"] = args.name or kw.get("name")
    if args.timeout is not None:
        kw["timeout"] = args.timeout
    s.socket = args.socket or s.socket
    s.allow_users += args.allow_user
    s.allow_groups += args.allow_group
    for name in args.load:
        if cfg is not None:  # aliases, blacklist, options and softdeps apply
            plan = cfg.modprobe_plan(name)
            s.load.append((plan.name, plan.params, plan.pre, plan.post))
        else:
            s.load.append((name, {}, (), ()))
    return s


def _load(host: livemod.Host, s: _Settings, stop: threading.Event) -> None:
    """modprobe the start-up modules; a soft dependency that fails is reported, not fatal."""
    for name, params, pre, post in s.load:
        for soft in pre:
            _soft_modprobe(host, soft, name)
        if stop.is_set():
            return
        host.modprobe(name, **params)
        for soft in post:
            _soft_modprobe(host, soft, name)


def _soft_modprobe(host: livemod.Host, name: str, wanted_by: str) -> None:
    try:
        host.modprobe(name)
    except livemod.LivemodError as exc:
        print(f"livemod host: soft dependency {name!r} of {wanted_by!r} not loaded: {exc}",
              file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    """Run the host until SIGTERM or SIGINT; returns the exit code."""
    s = _settings(args)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    host = livemod.Host(**s.host_kwargs)
    server: ControlServer | None = None
    try:
        if args.verbose:
            host.on_event(lambda ev: print(_render.event_line(event_to_dict(ev)),
                                           file=sys.stderr, flush=True))
        _load(host, s, stop)
        server = ControlServer(host, s.socket, allow_users=s.allow_users,
                               allow_groups=s.allow_groups).start()
        print(f"livemod host {host.name} (pid {os.getpid()}) ready on {server.path}",
              flush=True)
        while not stop.wait(1.0):
            pass
        print(f"livemod host {host.name}: stopping: unloading "
              f"{len(host.lsmod())} module(s)", file=sys.stderr, flush=True)
    finally:
        # Stop taking requests first, so nothing is loaded while everything is unloaded.
        if server is not None:
            server.close()
        host.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print(f"livemod host {host.name}: stopped", file=sys.stderr, flush=True)
    return 0
