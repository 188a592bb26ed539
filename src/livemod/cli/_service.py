"""``livemod --service NAME COMMAND``: every worker of a service at once.

Queries (``lsmod``, ``status``, ``param NAME``) ask every worker and merge the answers
into one table; workers that do not answer are named, stale sockets of dead pids are
removed and said so. Changes (``upgrade``, ``insmod``, ``rmmod``, ``modprobe``,
``param NAME key=value``) are one all-or-nothing transaction of
:class:`livemod.service.Coordinator`; ``--timeout`` is how long each worker has to vote.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from typing import Any

from ..errors import LivemodError
from ..service import Coordinator, Outcome, service_dir
from . import _render

__all__ = ["command_for"]


def _coordinator(args: argparse.Namespace) -> Coordinator:
    return Coordinator(args.service, vote_timeout=args.timeout)


def _notes(errors: dict[int, str], stale: list[int]) -> None:
    for pid, error in sorted(errors.items()):
        print(f"livemod: worker pid {pid} did not answer: {error}", file=sys.stderr)
    if stale:
        print(f"livemod: removed stale sockets of dead pids {', '.join(map(str, stale))}",
              file=sys.stderr)


def lsmod(args: argparse.Namespace) -> int:
    results, errors, stale = _coordinator(args).ask_all("lsmod", timeout=args.timeout)
    if args.json:
        _render.dump_json({"workers": {str(p): r for p, r in results.items()},
                           "unreachable": {str(p): e for p, e in errors.items()},
                           "stale": stale}, sys.stdout)
        return 0
    pids = sorted(results)
    names: list[str] = []
    for pid in pids:
        names += [r["name"] for r in results[pid] if r["name"] not in names]
    rows = []
    for name in names:
        cells = []
        for pid in pids:
            found = [r for r in results[pid] if r["name"] == name]
            cells.append(", ".join(f"{r['version']} {r['state']}" for r in found) or "-")
        rows.append([name, *cells])
    _render.table(["Module", *(f"pid {p}" for p in pids)], rows, sys.stdout)
    for pid, error in sorted(errors.items()):
        print(f"pid {pid}: no answer: {error}")
    _notes({}, stale)
    return 0


def _agent(service: str) -> dict[str, Any] | None:
    """The machine's etcd agent as it last described itself (``livemod agent`` writes
    ``<service dir>/agent.json``), or None if there is none running."""
    try:
        with open(os.path.join(service_dir(service), "agent.json"), "rb") as f:
            record = json.loads(f.read())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict):
        return None
    try:
        os.kill(int(record.get("pid", 0)), 0)
    except (ProcessLookupError, ValueError):
        return None  # that agent is gone
    except PermissionError:
        pass
    return record


def _engine_line(agent: dict[str, Any]) -> str:
    line = (f"engine: {agent.get('engine')} (agent of machine {agent.get('machine')}, pid "
            f"{agent.get('pid')}, etcd {agent.get('etcd')}, generation "
            f"{agent.get('generation')}, {agent.get('state')})")
    if agent.get("engine") == "unreachable":
        line += f": {agent.get('error')}; the workers keep their set"
    return line


def status(args: argparse.Namespace) -> int:
    results, errors, stale = _coordinator(args).ask_all("status", timeout=args.timeout)
    agent = _agent(args.service)
    if args.json:
        _render.dump_json({"workers": {str(p): r for p, r in results.items()},
                           "unreachable": {str(p): e for p, e in errors.items()},
                           "stale": stale, "agent": agent}, sys.stdout)
        return 0
    rows = []
    for pid, st in sorted(results.items()):
        svc = st.get("service") or {}
        rows.append([pid, svc.get("generation", "?"), svc.get("desired_generation", "?"),
                     "drifted" if svc.get("drifted") else "in step", st.get("modules", "?"),
                     svc.get("drift") or ""])
    for pid, error in sorted(errors.items()):
        rows.append([pid, "?", "?", "no answer", "?", error])
    _render.table(["Worker", "Generation", "Desired", "State", "Modules", "Why"], rows,
                  sys.stdout)
    if agent is not None:
        print(_engine_line(agent))
    _notes({}, stale)
    return 0


def _change(args: argparse.Namespace, op: str, change: dict[str, Any]) -> int:
    outcome: Outcome = _coordinator(args).run(op, change)
    if args.json:
        _render.dump_json({"txn": outcome.txn, "outcome": outcome.outcome,
                           "generation": outcome.generation, "seconds": outcome.seconds,
                           "results": {str(p): r for p, r in outcome.results.items()},
                           "errors": {str(p): e for p, e in outcome.errors.items()},
                           "dropped": [v.pid for v in outcome.votes if v.dropped]},
                          sys.stdout)
        return 0
    for pid, result in sorted(outcome.results.items()):
        shown = (f"{result['name']} {result['version']} {result['state']}"
                 if isinstance(result, dict) and "version" in result else result)
        print(f"pid {pid}: {shown}")
    for vote in outcome.votes:
        if vote.dropped:
            print(f"pid {vote.pid}: died during the change (dropped; a replacement follows "
                  f"the desired set)")
    _notes(outcome.errors, [])
    print(f"{op}: committed in {len(outcome.results)} worker(s), generation "
          f"{outcome.generation} ({outcome.seconds * 1000:.0f} ms)")
    return 0


def upgrade(args: argparse.Namespace) -> int:
    return _change(args, "upgrade", {
        "name": args.name, "path": os.path.abspath(args.path) if args.path else None,
        "cascade": args.cascade, "downgrade": args.downgrade, "params": dict(args.params)})


def insmod(args: argparse.Namespace) -> int:
    return _change(args, "insmod", {"path": os.path.abspath(args.path),
                                    "params": dict(args.params)})


def rmmod(args: argparse.Namespace) -> int:
    wait = args.wait is not None
    return _change(args, "rmmod", {
        "name": args.name, "wait": wait,
        "timeout": args.wait if wait and args.wait >= 0 else None,
        "force": args.force, "cascade": args.cascade})


def modprobe(args: argparse.Namespace) -> int:
    if args.remove:
        raise LivemodError("modprobe -r is not a service-wide change; use "
                           f"livemod --service {args.service} rmmod {args.name}")
    return _change(args, "modprobe", {"name": args.name, "params": dict(args.params)})


def param(args: argparse.Namespace) -> int:
    key, sep, value = (args.setting or "").partition("=")
    if sep:
        return _change(args, "param", {"name": args.name, "key": key, "value": value})
    query: dict[str, Any] = {"name": args.name, **({"key": key} if key else {})}
    results, errors, stale = _coordinator(args).ask_all("param", timeout=args.timeout, **query)
    if args.json:
        _render.dump_json({str(p): r for p, r in results.items()}, sys.stdout)
    else:
        for pid, result in sorted(results.items()):
            if key:
                print(f"pid {pid}: {result['key']}={result['value']}")
            else:
                print(f"pid {pid}: " + ", ".join(f"{k}={v['value']!r}"
                                                 for k, v in result.items()))
    _notes(errors, stale)
    return 0


_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "lsmod": lsmod, "status": status, "upgrade": upgrade, "insmod": insmod, "rmmod": rmmod,
    "modprobe": modprobe, "param": param,
}


def command_for(name: str) -> Callable[[argparse.Namespace], int]:
    """The ``--service`` form of a subcommand.

    Raises:
        LivemodError: the subcommand has no service-wide form.
    """
    if name not in _COMMANDS:
        raise LivemodError(f"{name} has no --service form (those are: "
                           f"{', '.join(_COMMANDS)}); talk to one worker with --socket "
                           f"<socket dir>/<service>/<pid>.sock")
    return _COMMANDS[name]
