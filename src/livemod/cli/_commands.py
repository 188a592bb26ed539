"""The subcommands that talk to a running host: one request each, over the socket client.

Every function takes the parsed arguments and returns the exit code; errors propagate as
LivemodError subclasses and ``main`` maps them to exit codes.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import time
from collections.abc import Callable
from typing import Any, Final, TextIO

import livemod

from ..control import ControlClient, HostUnreachable, find_socket
from ..control.records import config_to_dict, info_to_dict, to_jsonable
from ..watch import UpgradeOutcome, UpgradeResult
from . import _render
from ._messages import cli_message

__all__ = [
    "check",
    "demo",
    "depmod",
    "insmod",
    "keygen",
    "leaks",
    "log",
    "lsmod",
    "modinfo",
    "modprobe",
    "param",
    "rmmod",
    "sign",
    "status",
    "upgrade",
    "watch",
]

#: How often ``rmmod --wait`` repeats what it waits for when that has not changed.
_REPEAT_EVERY = 2.0


#: ``_client(timeout=FOREVER)``: wait for ever (``log --follow``); distinct from "not given".
FOREVER: Final = -1.0


def _stale(path: str) -> None:
    print(f"livemod: removed stale socket {path} (no host listens on it any more)",
          file=sys.stderr, flush=True)


def _client(args: argparse.Namespace, *, timeout: float | None = None) -> ControlClient:
    path = find_socket(getattr(args, "socket", None), on_stale=_stale)
    limit = args.timeout if timeout is None else None if timeout == FOREVER else timeout
    return ControlClient(path, timeout=limit)


def _show(args: argparse.Namespace, result: Any, *, text: str | None = None) -> int:
    if args.json:
        _render.dump_json(result, sys.stdout)
    elif text is not None:
        print(text)
    return 0


def _query(
    args: argparse.Namespace, op: str, render: Callable[[Any, TextIO], None],
    *, leak_note: bool = False,
) -> int:
    """Ask the host one question; print JSON, or the table ``render`` makes of it.

    ``leak_note``: follow the table with a note when the host's leak check can give no
    verdict (free-threaded 3.13), so that a clean-looking table does not mislead."""
    with _client(args) as client:
        result = client.call(op)
        note = _leak_note(client) if leak_note and not args.json else None
    if args.json:
        return _show(args, result)
    render(result, sys.stdout)
    if note is not None:
        print(f"note: {note}")
    return 0


def _leak_note(client: ControlClient) -> str | None:
    """``leak check cannot be verified ...`` when the host's interpreter allows no verdict."""
    state = client.call("status").get("leak_check", "on")
    return None if state in ("on", "off") else f"leak check {state}"


def lsmod(args: argparse.Namespace) -> int:
    """``livemod lsmod``: the module table."""
    return _query(args, "lsmod", _render.lsmod, leak_note=True)


def insmod(args: argparse.Namespace) -> int:
    """``livemod insmod PATH [param=value ...]``: the path is made absolute here, since the
    host does not share our working directory."""
    with _client(args) as client:
        row = client.call("insmod", path=os.path.abspath(args.path), params=dict(args.params))
    return _show(args, row, text=f"{row['name']} {row['version']} {row['state']}")


def rmmod(args: argparse.Namespace) -> int:
    """``livemod rmmod NAME``; with ``--wait`` it shows on stderr what it still waits for."""
    wait = args.wait is not None
    timeout = args.wait if wait and args.wait >= 0 else None
    # Progress arrives twice a second, but the last stretch of a long wait may be silent.
    limit = max(args.timeout, (timeout or 0.0) + 10.0)
    shown: tuple[list[str], float] = ([], 0.0)
    result: Any = None
    started = time.monotonic()
    with _client(args, timeout=limit) as client:
        for kind, payload in client.stream("rmmod", name=args.name, wait=wait,
                                           timeout=timeout, force=args.force,
                                           cascade=args.cascade):
            if kind == "result":
                result = payload
                continue
            pending = list(payload.get("pending", ()))
            now = time.monotonic()
            if pending != shown[0] or now - shown[1] >= _REPEAT_EVERY:
                shown = (pending, now)
                print(f"livemod rmmod: {payload.get('module', args.name)}: waiting for: "
                      f"{'; '.join(pending)} ({now - started:.1f}s)", file=sys.stderr,
                      flush=True)
    return _show(args, result)


def keygen(args: argparse.Namespace) -> int:
    """``livemod keygen KEY``: a new Ed25519 key pair; trust a host in KEY.pub."""
    from ..signing import keygen as make

    private, public = make(args.key)
    return _show(args, {"private": str(private), "public": str(public)},
                 text=f"private key: {private} (mode 0600; keep it secret)\n"
                      f"public key:  {public} (copy it into the host's trusted_keys folder)")


def sign(args: argparse.Namespace) -> int:
    """``livemod sign MODULE --key KEY``: sign every file of the module as it is now."""
    from ..signing import sign as write_signature

    signed = write_signature(args.module, args.key)
    return _show(args, {"name": signed.info.name, "version": signed.info.version,
                        "files": len(signed.files), "signature": str(signed.signature)},
                 text=f"signed {signed.info.name} {signed.info.version} "
                      f"({len(signed.files)} file(s)): {signed.signature}")


def upgrade(args: argparse.Namespace) -> int:
    """``livemod upgrade NAME [PATH] [param=value ...]``: hot upgrade (PATH defaults to the
    module's own file, re-read)."""
    path = os.path.abspath(args.path) if args.path else None
    started = time.perf_counter()
    with _client(args, timeout=max(args.timeout, 60.0)) as client:
        row = client.call("upgrade", name=args.name, path=path, cascade=args.cascade,
                          downgrade=args.downgrade, params=dict(args.params))
    took = (time.perf_counter() - started) * 1000
    pending = row.get("removal_pending") or []
    note = (f"; {', '.join(pending)} still in use: removal pending (see lsmod)"
            if pending else "")
    return _show(args, row, text=f"{row['name']} {row['version']} {row['state']} "
                                 f"(upgraded in {took:.1f} ms{note})")


class _SocketTarget:
    """watch mode's Target over the control socket."""

    def __init__(self, args: argparse.Namespace) -> None:
        self._args = args

    def modules(self) -> list[tuple[str, str, str]]:
        with _client(self._args) as client:
            rows = client.call("lsmod")
        return [(r["name"], r["version"], r["path"]) for r in rows if r["state"] == "LIVE"]

    def upgrade(self, name: str) -> UpgradeResult:
        with _client(self._args, timeout=max(self._args.timeout, 60.0)) as client:
            row = client.call("upgrade", name=name, cascade=True,
                              downgrade=self._args.downgrade)
        return UpgradeResult(str(row["version"]), tuple(row.get("removal_pending") or ()))


def watch(args: argparse.Namespace) -> int:
    """``livemod watch [DIR ...]``: upgrade modules of the running host as files are saved
    (DIR defaults to the folders of the loaded modules). Downgrades are refused, as
    ``upgrade`` refuses them, unless ``--downgrade``."""
    from ..watch import watch as run_watch

    target = _SocketTarget(args)
    folders = [os.path.abspath(d) for d in args.folders] or sorted(
        {os.path.dirname(path) for _, _, path in target.modules()}
    )
    if not folders:
        raise livemod.LivemodError("nothing to watch: no module is loaded; give a folder")

    def report(line: str) -> None:
        if args.json:
            if line.startswith("watching "):
                _render.dump_json({"watching": folders}, sys.stdout, lines=True)
        else:
            print(cli_message(line), flush=True)

    def on_outcome(outcome: UpgradeOutcome) -> None:
        if args.json:
            record = outcome.as_dict()
            record["error"] = cli_message(str(record["error"]))
            _render.dump_json(record, sys.stdout, lines=True)

    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how one stops watching
        run_watch(target, folders, report=report, on_outcome=on_outcome)
    return 0


def _offline(args: argparse.Namespace) -> livemod.Host | None:
    """A host that loads nothing, on ``--modpath``/``--config``, to answer here; None when
    neither was given (the running host is asked)."""
    if not args.modpath and not args.config:
        return None
    config = None
    folders = [os.path.abspath(d) for d in args.modpath]
    if args.config:
        from ..config import load_config

        config = load_config(args.config)
        folders = [*config.host.modpath, *folders]
    return livemod.Host(folders, config=config, name="livemod-offline", leak_check=False)


def _insmod_line(row: dict[str, Any]) -> str:
    return f"insmod {row['path']}" + ("  # loaded" if row.get("loaded") else "")


def modprobe(args: argparse.Namespace) -> int:
    """``livemod modprobe [-r | -n | --show-depends | -c] NAME [param=value ...]``."""
    if args.showconfig:
        if args.name:
            raise livemod.ParamError("modprobe -c takes no module name")
        local = _offline(args)
        if local is not None:
            with local:
                config = config_to_dict(local.config, local.modpath)
        else:
            with _client(args) as client:
                config = client.call("config")
        if args.json:
            return _show(args, config)
        _render.config(config, sys.stdout)
        return 0
    if not args.name:
        raise livemod.ParamError("modprobe needs a module name (or -c)")
    if args.dry_run or args.show_depends:
        local = _offline(args)
        include = bool(args.show_depends)
        if local is not None:
            with local:
                plan: list[dict[str, Any]] = [
                    {"name": i.name, "version": i.version, "path": i.path, "loaded": False}
                    for i in local.modprobe_plan(args.name, include_loaded=include)]
        else:
            with _client(args) as client:
                plan = client.call("plan", name=args.name, include_loaded=include)
        lines = [_insmod_line(row) for row in plan] or [f"{args.name}: already loaded"]
        return _show(args, plan, text="\n".join(lines))
    if args.modpath or args.config:
        raise livemod.ParamError("--modpath and --config only apply to modprobe -n, "
                                 "--show-depends and -c (a host loads from its own modpath)")
    with _client(args) as client:
        if args.remove:
            if args.params:
                raise livemod.ParamError("modprobe -r takes no param=value arguments")
            result = client.call("modprobe", name=args.name, remove=True)
            return _show(args, result, text=f"removed: {', '.join(result['removed'])}")
        row = client.call("modprobe", name=args.name, params=dict(args.params))
    return _show(args, row, text=f"{row['name']} {row['version']} {row['state']}")


def _is_path(target: str) -> bool:
    return os.sep in target or target.endswith(".py") or os.path.exists(target)


def modinfo(args: argparse.Namespace) -> int:
    """``livemod modinfo PATH`` reads the file here, statically (no host needed);
    ``livemod modinfo NAME --modpath DIR`` (or ``--config FILE``) resolves the name here,
    offline, like kmod's; ``livemod modinfo NAME`` alone asks the running host (loaded, or
    found on its modpath)."""
    local = _offline(args)
    note = None
    if _is_path(args.target) or local is not None:
        with local or livemod.Host(name="livemod-modinfo", leak_check=False) as host:
            target = args.target
            if host.config is not None and not _is_path(target):
                target = host.config.resolve(target)
            info = info_to_dict(host.modinfo(target))
    else:
        try:
            with _client(args) as client:
                info = client.call("modinfo", target=args.target)
                note = None if args.json else _leak_note(client)
        except HostUnreachable as exc:
            raise HostUnreachable(f"{exc} (or read it offline: livemod modinfo "
                                  f"{args.target} --modpath DIR)") from None
    if args.json:
        return _show(args, info)
    _render.modinfo(info, sys.stdout)
    if note is not None:
        print(f"{'note:':<13}{note}")
    return 0


def depmod(args: argparse.Namespace) -> int:
    """``livemod depmod DIR`` indexes a folder here, offline (like the kernel's depmod);
    ``livemod depmod`` asks the running host to rebuild the index of its modpath."""
    if args.folder:
        from ..depmod import depmod as index

        result: Any = to_jsonable(index(args.folder))
    else:
        with _client(args, timeout=max(args.timeout, 120.0)) as client:
            result = client.call("depmod")
    if args.json:
        return _show(args, result)
    _render.depmod(result, sys.stdout)
    return 0


def param(args: argparse.Namespace) -> int:
    """``livemod param NAME`` lists, ``NAME key`` reads, ``NAME key=value`` sets."""
    with _client(args) as client:
        if args.setting is None:
            values = client.call("param", name=args.name)
            if args.json:
                return _show(args, values)
            _render.params(values, sys.stdout)
            return 0
        key, sep, value = args.setting.partition("=")
        if sep:
            result = client.call("param", name=args.name, key=key, value=value)
        else:
            result = client.call("param", name=args.name, key=key)
    return _show(args, result, text=f"{result['key']}={result['value']}")


def log(args: argparse.Namespace) -> int:
    """``livemod log [--follow] [-n N]``; following goes on, idle or not, until Ctrl-C
    (exit 0) or the host stops. ``-n 0`` shows none of the past events (as ``tail -n 0``)."""
    if not args.follow:
        with _client(args) as client:
            events = client.call("log", limit=args.limit)
        if args.json:
            return _show(args, events)
        for event in events:
            print(_render.event_line(event))
        return 0
    with _client(args, timeout=FOREVER) as client:
        try:
            for kind, payload in client.stream("log", follow=True, limit=args.limit):
                if kind != "event":
                    continue
                if args.json:
                    _render.dump_json(payload, sys.stdout, lines=True)
                else:
                    print(_render.event_line(payload), flush=True)
        except KeyboardInterrupt:
            return 0
    return 0


def leaks(args: argparse.Namespace) -> int:
    """``livemod leaks``: unloaded modules whose code is still alive, and who holds it."""
    with _client(args, timeout=max(args.timeout, 60.0)) as client:
        found = client.call("leaks")
        state = "on" if args.json or found else client.call("status").get("leak_check", "on")
    if args.json:
        return _show(args, found)
    _render.leaks(found, sys.stdout, leak_check=state)
    return 0


def status(args: argparse.Namespace) -> int:
    """``livemod status``: host name, pid, uptime, taints and counts."""
    return _query(args, "status", _render.status)


def demo(args: argparse.Namespace) -> int:
    """``livemod demo``: a host under load in this process (no socket involved)."""
    from ..demo import run

    if not args.json:
        return run(seconds=args.seconds)
    out = io.StringIO()
    code = run(seconds=args.seconds, out=out)
    return _show(args, {"ok": code == 0, "exit": code, "lines": out.getvalue().splitlines()})


def check(args: argparse.Namespace) -> int:
    """``livemod check PATH...``: each module loaded, called, upgraded to itself and
    unloaded in a fresh host, leak-checked; exit 0 when every one is clean, 1 otherwise."""
    from ..testing import check_paths

    results = check_paths(args.paths, params=dict(args.params))
    ok = all(r.ok for r in results)
    if args.json:
        _show(args, {"ok": ok, "modules": [r.as_dict() for r in results]})
    else:
        for r in results:
            print(str(r))
    return 0 if ok else 1
