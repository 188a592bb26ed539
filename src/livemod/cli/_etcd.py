"""``livemod agent`` and ``livemod rollout``: the etcd commands (imported only when run)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from typing import Any

from ..errors import LivemodError
from ..etcd import Agent, EtcdClient, Options, Rollout
from . import _render

__all__ = ["agent", "rollout_change", "rollout_resume", "rollout_status", "rollout_undo"]


def _client(args: argparse.Namespace) -> EtcdClient:
    url = getattr(args, "etcd", None)
    service = getattr(args, "service", None)
    if not url or not service:
        raise LivemodError(f"livemod {args.command} needs --etcd URL and --service NAME")
    user, password = None, None
    if getattr(args, "user", None):
        user, _, password = args.user.partition(":")
        password = password or os.environ.get("LIVEMOD_ETCD_PASSWORD", "")
    return EtcdClient(url, timeout=getattr(args, "engine_timeout", None) or 5.0,
                      ca_file=getattr(args, "cacert", None),
                      cert_file=getattr(args, "cert", None),
                      key_file=getattr(args, "key", None), user=user, password=password)


def _prefix(args: argparse.Namespace) -> str:
    return getattr(args, "prefix", None) or "/livemod"


def agent(args: argparse.Namespace) -> int:
    """Run the agent until SIGTERM or Ctrl-C; the workers keep running afterwards."""
    logging.basicConfig(level=logging.INFO, format="livemod agent: %(message)s",
                        stream=sys.stderr)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    a = Agent(_client(args), args.service, args.machine, prefix=_prefix(args),
              ttl=args.ttl, cache=args.cache).start()
    line = {"ready": True, "machine": args.machine, "pid": os.getpid(),
            "service": args.service}
    if args.json:
        _render.dump_json(line, sys.stdout)
    else:
        print(f"agent ready: machine {args.machine} of service {args.service} "
              f"(pid {os.getpid()})")
    sys.stdout.flush()
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        a.stop()
    return 0


def _rollout(args: argparse.Namespace) -> Rollout:
    say = (lambda line: None) if args.json else (lambda line: print(line, flush=True))
    return Rollout(_client(args), args.service, prefix=_prefix(args),
                   ttl=getattr(args, "lock_ttl", 10), say=say)


def _options(args: argparse.Namespace) -> Options:
    return Options(batch=str(args.batch), canary=args.canary, max_failed=args.max_failed,
                   progress_deadline=args.progress_deadline)


def _ended(args: argparse.Namespace, record: dict[str, Any]) -> int:
    if args.json:
        _render.dump_json(record, sys.stdout)
    return 0


def rollout_change(args: argparse.Namespace) -> int:
    ro = _rollout(args)
    options = _options(args)
    params = dict(getattr(args, "params", None) or ())
    if args.change == "param":
        key, sep, value = args.setting.partition("=")
        if not sep or not key:
            raise LivemodError(f"rollout param needs key=value, got {args.setting!r}")
        return _ended(args, ro.start("param", options, name=args.name, key=key, value=value))
    path = os.path.abspath(args.path) if getattr(args, "path", None) else None
    return _ended(args, ro.start(args.change, options, name=getattr(args, "name", None),
                                 path=path, params=params,
                                 downgrade=bool(getattr(args, "downgrade", False))))


def rollout_undo(args: argparse.Namespace) -> int:
    return _ended(args, _rollout(args).undo(_options(args)))


def rollout_resume(args: argparse.Namespace) -> int:
    return _ended(args, _rollout(args).resume())


def rollout_status(args: argparse.Namespace) -> int:
    status = _rollout(args).status()
    if args.json:
        _render.dump_json(status, sys.stdout)
        return 0
    desired, rollout = status["desired"], status["rollout"]
    if desired is None:
        print(f"service {args.service}: no desired record in etcd under "
              f"{status['prefix']}/{args.service}/ (no rollout yet)")
    else:
        change = desired.get("change") or {}
        print(f"service {args.service}: generation {desired['generation']} "
              f"(from {desired.get('base')}): {change.get('op')} {change.get('name')}")
    if rollout is not None:
        print(f"rollout {rollout['id']}: {rollout['state']}, "
              f"{len(rollout.get('committed', ()))} machine(s) committed, batch "
              f"{rollout.get('current')}")
        for k, b in enumerate(rollout.get("batches", ())):
            print(f"  batch {k}: {', '.join(b.get('machines', ()))}: "
                  f"{b.get('outcome') or 'in progress'}"
                  + (f" ({b['reason']})" if b.get("reason") else ""))
    rows = []
    for machine, record in sorted(status["machines"].items()):
        age = time.time() - float(record.get("updated", 0))
        rows.append([machine, record.get("generation"), record.get("state"),
                     record.get("engine"), len(record.get("workers", {})),
                     f"{age:.0f}s", record.get("drift") or ""])
    _render.table(["Machine", "Generation", "State", "Engine", "Workers", "Since",
                   "Drift"], rows, sys.stdout)
    return 0
