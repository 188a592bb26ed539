"""The arguments of ``livemod agent`` and ``livemod rollout`` (many machines, on etcd).

Only argparse here: the etcd code (``livemod.etcd``) is imported when one of these
commands runs, so every other command, and ``import livemod``, never loads it.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

__all__ = ["add_etcd_commands"]


def _run(name: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        from . import _etcd

        result: int = getattr(_etcd, name)(args)
        return result

    return run


def _engine(parser: argparse.ArgumentParser, default: Any) -> None:
    """The engine options; ``default`` is SUPPRESS on a sub-subcommand, so a value given
    before the change (``rollout --etcd URL upgrade ...``) is not overwritten."""
    parser.add_argument("--etcd", default=default, metavar="URL",
                        help="etcd's client URL (http://HOST:2379, or https:// with --cacert)")
    parser.add_argument("--service", default=default, metavar="NAME",
                        help="the service (the workers' Host(service=NAME))")
    parser.add_argument("--prefix", default=default, metavar="PATH",
                        help="the key prefix in etcd (default /livemod)")
    parser.add_argument("--cacert", default=default, metavar="FILE",
                        help="TLS: the CA certificate to trust")
    parser.add_argument("--cert", default=default, metavar="FILE",
                        help="TLS: this client's certificate")
    parser.add_argument("--key", default=default, metavar="FILE",
                        help="TLS: this client's private key")
    parser.add_argument("--user", default=default, metavar="NAME[:PASSWORD]",
                        help="etcd authentication (the password may also come from "
                             "$LIVEMOD_ETCD_PASSWORD)")
    parser.add_argument("--engine-timeout", type=float, default=default, metavar="SECONDS",
                        help="seconds each request to etcd may take (default 5)")


def _moves(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch", default="1", metavar="N|P%",
                        help="machines per batch after the canary: a count or a "
                             "percentage of the machines (default 1)")
    parser.add_argument("--canary", type=int, default=1, metavar="N",
                        help="machines in the first batch; it must commit for the rollout "
                             "to go on (default 1; 0: no canary)")
    parser.add_argument("--max-failed", type=int, default=0, metavar="N",
                        help="batches that may abort before the rollout halts (default 0)")
    parser.add_argument("--progress-deadline", type=float, default=60.0, metavar="S",
                        help="seconds each batch has to vote and commit (default 60)")
    parser.add_argument("--lock-ttl", type=int, default=10, metavar="S",
                        help="seconds of the coordinator's lock lease (default 10)")


def add_etcd_commands(sub: Any, data: argparse.ArgumentParser,
                      params: Callable[[str], tuple[str, str]]) -> None:
    """Add ``agent`` and ``rollout`` to the subcommands ``sub``."""
    a = sub.add_parser(
        "agent", parents=[data], help="bridge etcd and this machine's workers of a service",
        description="Run the agent of one machine in the foreground: it registers the "
        "machine under a lease, follows the service's desired set and rollouts in etcd, "
        "and changes this machine's workers (all or nothing) when a batch names it. When "
        "etcd is unreachable the workers keep their set and the agent retries.")
    a.set_defaults(run=_run("agent"))
    _engine(a, None)
    a.add_argument("--machine", required=True, metavar="ID",
                   help="this machine's id, unique in the service")
    a.add_argument("--ttl", type=int, default=10, metavar="SECONDS",
                   help="seconds of the machine's lease: a dead agent drops out after "
                        "about this long (default 10)")
    a.add_argument("--cache", metavar="DIR",
                   help="where module files taken out of etcd are kept")

    r = sub.add_parser(
        "rollout", parents=[data], help="roll a module change out across machines (etcd)",
        description="Write a change of a service's desired set into etcd and move the "
        "machines to it in batches, the canary first, each batch all or nothing. status "
        "shows where it is; undo rolls out the generation before; resume continues one "
        "whose coordinator stopped.")
    r.set_defaults(run=_run("rollout_status"))
    _engine(r, None)
    verbs = r.add_subparsers(dest="change", required=True, metavar="CHANGE",
                             help="the change to roll out, or status, undo, resume",
                             parser_class=type(r))

    def verb(name: str, help: str, run: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = verbs.add_parser(name, help=help, description=help,
                                                      parents=[data])
        _engine(p, argparse.SUPPRESS)
        p.set_defaults(run=_run(run))
        return p

    p = verb("upgrade", "hot-upgrade a module on every machine", "rollout_change")
    p.add_argument("name", help="the module's name")
    p.add_argument("path", help="the new version's file (read here, put into etcd)")
    p.add_argument("params", nargs="*", type=params, metavar="param=value",
                   help="parameters that change with the upgrade")
    p.add_argument("--downgrade", action="store_true", help="allow an older version")
    _moves(p)
    p = verb("insmod", "load a module on every machine", "rollout_change")
    p.add_argument("path", help="the module file (read here, put into etcd)")
    p.add_argument("params", nargs="*", type=params, metavar="param=value",
                   help="the module's parameters")
    _moves(p)
    p = verb("rmmod", "unload a module on every machine", "rollout_change")
    p.add_argument("name", help="the module's name")
    _moves(p)
    p = verb("param", "set a module parameter on every machine", "rollout_change")
    p.add_argument("name", help="the module's name")
    p.add_argument("setting", metavar="key=value", help="the parameter and its value")
    _moves(p)
    p = verb("apply", "roll out the one change a desired.toml asks for", "rollout_change")
    p.add_argument("path", metavar="desired.toml",
                   help="the modules the service should run ([[module]] path, params)")
    _moves(p)
    p = verb("undo", "roll out the generation before the last change", "rollout_undo")
    _moves(p)
    p = verb("resume", "continue the running or halted rollout", "rollout_resume")
    p.add_argument("--lock-ttl", type=int, default=10, metavar="S",
                   help="seconds of the coordinator's lock lease (default 10)")
    verb("status", "the desired generation, the rollout and every machine", "rollout_status")
