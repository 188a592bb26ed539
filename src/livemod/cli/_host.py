"""``livemod host``: run a host in the foreground, serving its control socket.

With ``--config FILE`` the host is made by ``Host.from_config`` (settings, the modules of
its state file, then the ``load`` list; aliases, blacklist, options and soft dependencies
apply to every ``modprobe``, including those sent over the socket); command-line options
override the file's ``[host]`` settings. ``--load NAME`` modules are modprobe'd after that,
and one that fails stops the start with its error and exit code.

It prints one line when it is ready (``livemod host NAME (pid N) ready on PATH``, flushed,
for whoever started it to wait for; with ``--json`` a JSON line ``{"event": "ready", "name",
"pid", "socket"}``). SIGTERM or SIGINT stop it cleanly: the socket stops
serving, every module is unloaded, dependents first (``Host.close``), the socket file is
removed, and the exit code is 0.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import sys
import threading
from types import FrameType
from typing import Any

import livemod

from ..control import ControlServer
from ..control.records import event_to_dict
from . import _render

__all__ = ["run"]


@dataclasses.dataclass
class _Access:
    """Where the socket is and who besides the host's own user and root may use it."""

    socket: str | None = None
    allow_users: list[str | int] = dataclasses.field(default_factory=list)
    allow_groups: list[str | int] = dataclasses.field(default_factory=list)


def _make_host(args: argparse.Namespace) -> tuple[livemod.Host, _Access]:
    """The host, from ``--config`` (overridden by the command line) or the command line."""
    access = _Access(args.socket, list(args.allow_user), list(args.allow_group))
    if not args.config:
        kwargs: dict[str, Any] = {"modpath": args.modpath, "name": args.name}
        if args.timeout is not None:
            kwargs["timeout"] = args.timeout
        return livemod.Host(**kwargs), access
    from ..config import load_config

    config = load_config(args.config)
    settings = config.host
    overrides: dict[str, Any] = {}
    if args.modpath:
        overrides["modpath"] = (*settings.modpath, *map(os.path.abspath, args.modpath))
    if args.name:
        overrides["name"] = args.name
    if args.timeout is not None:
        overrides["timeout"] = args.timeout
    config = dataclasses.replace(config, host=dataclasses.replace(settings, **overrides))
    access.socket = access.socket or settings.socket
    access.allow_users[:0] = settings.allow_users
    access.allow_groups[:0] = settings.allow_groups
    return livemod.Host.from_config(config), access


def run(args: argparse.Namespace) -> int:
    """Run the host until SIGTERM or SIGINT; returns the exit code."""
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        host, access = _make_host(args)
    except BaseException:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        raise
    server: ControlServer | None = None
    try:
        if args.verbose:
            host.on_event(lambda ev: print(_render.event_line(event_to_dict(ev)),
                                           file=sys.stderr, flush=True))
        for name in args.load:
            if stop.is_set():
                break
            host.modprobe(name)
        server = ControlServer(host, access.socket, allow_users=access.allow_users,
                               allow_groups=access.allow_groups).start()
        if args.json:
            _render.dump_json({"event": "ready", "name": host.name, "pid": os.getpid(),
                               "socket": server.path}, sys.stdout, lines=True)
        else:
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
