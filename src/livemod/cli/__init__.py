"""The ``livemod`` command: operate the modules of a running host from a shell.

It is a thin layer: ``livemod host`` runs a :class:`livemod.Host` with a
:class:`~livemod.control.ControlServer`; every other subcommand (except ``demo`` and
``modinfo PATH``) is one request over the host's socket through
:class:`~livemod.control.ControlClient`. The socket is ``--socket PATH``, else
``$LIVEMOD_SOCKET``, else the only socket in the default folder
(``$XDG_RUNTIME_DIR/livemod``). Output is a table for people; ``--json`` prints JSON for
scripts (``log --follow --json``: one JSON object per line).

Exit codes (one per error class, so scripts can tell failures apart without parsing text):

====  ===================================================================================
0     success
1     any other livemod error (an error code this version does not know, internal error)
2     usage error (bad arguments)
3     ModuleNotFound -- no such module loaded / on the modpath / at the path
4     ModuleExists -- already loaded
5     ManifestError -- the module's metadata is unusable
6     InitError -- the module's body or init raised; the load was rolled back
7     DependencyError -- a dependency is missing, the wrong version, or a cycle
8     ModuleBusy -- held, pinned, used or with calls in flight (rmmod was refused or timed
      out and was rolled back)
9     ModuleGoing -- the module is being unloaded
10    ParamError -- unknown parameter, not writable, or a value that does not convert
11    SignatureError -- missing or invalid signature
12    ProtocolError -- the host and the command do not understand each other
13    HostUnreachable -- no host on the socket (not running, wrong path, no answer)
14    PermissionDenied -- the host refuses this user
15    NotSupported -- the host cannot do this operation; NotInstalled -- it needs an extra
      that is not installed (the message gives the pip command)
16    TooManyClients -- the host serves its maximum of clients; retry
17    UpgradeError -- a hot upgrade was refused
18    ConfigError -- the configuration file (``livemod host --config``) is unusable
19    HostForked -- the host was inherited across fork(); build a new one in the child
20    TransactionAborted -- a ``--service`` change was aborted in every worker
21    DesiredSetError -- a service's desired-set file is corrupt or from a newer livemod
22    SpecError -- an implementation does not fit its hook's spec
23    EngineUnreachable -- etcd (livemod agent / rollout --etcd) did not answer
24    RolloutError -- a rollout was refused or stopped (lock held, lost a race, a batch
      aborted, unusable records)
130   interrupted (Ctrl-C) while waiting
====  ===================================================================================
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Final

from .. import errors
from ..control import errors as control_errors
from ._messages import cli_message
from ._parser import _Parser, build_parser

__all__ = ["EXIT_CODES", "cli_message", "error_record", "exit_code", "main"]

#: Exit code per error class (most specific first); documented above.
EXIT_CODES: Final[dict[type[errors.LivemodError], int]] = {
    errors.ModuleNotFound: 3,
    errors.ModuleExists: 4,
    errors.ManifestError: 5,
    errors.InitError: 6,
    errors.DependencyError: 7,
    errors.ModuleBusy: 8,
    errors.ModuleGoing: 9,
    errors.ParamError: 10,
    errors.SignatureError: 11,
    errors.ProtocolError: 12,
    control_errors.HostUnreachable: 13,
    control_errors.PermissionDenied: 14,
    control_errors.NotSupported: 15,
    errors.NotInstalled: 15,
    control_errors.TooManyClients: 16,
    errors.UpgradeError: 17,
    errors.ConfigError: 18,
    errors.HostForked: 19,
    errors.TransactionAborted: 20,
    errors.DesiredSetError: 21,
    errors.SpecError: 22,
    errors.EngineUnreachable: 23,
    errors.RolloutError: 24,
    errors.LivemodError: 1,
}
#: Exit code after Ctrl-C (128 + SIGINT), as shells report it.
INTERRUPTED: Final = 130


def exit_code(exc: errors.LivemodError) -> int:
    """The exit code for ``exc``: that of its most specific class in :data:`EXIT_CODES`."""
    for cls, code in EXIT_CODES.items():
        if isinstance(exc, cls):
            return code
    return 1


def error_record(exc: errors.LivemodError) -> dict[str, object]:
    """What ``--json`` prints for an error: ``{"error": {code, exit, message, ...}}``."""
    record: dict[str, object] = {"code": exc.code, "exit": exit_code(exc),
                                 "message": cli_message(str(exc))}
    if exc.module is not None:
        record["module"] = exc.module
    holders = getattr(exc, "holders", ())
    if holders:
        record["holders"] = list(holders)
    return {"error": record}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``livemod`` command; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    _Parser.json_requested = "--json" in argv
    args = build_parser().parse_args(argv)
    args.json = getattr(args, "json", False)
    try:
        if getattr(args, "service", None) and args.command not in ("agent", "rollout"):
            from ._service import command_for

            args.run = command_for(args.command)
        code: int = args.run(args)
        sys.stdout.flush()
        return code
    except errors.LivemodError as exc:
        if args.json:
            print(json.dumps(error_record(exc), indent=2), flush=True)
            return exit_code(exc)
        print(f"livemod {args.command}: {cli_message(str(exc))}", file=sys.stderr)
        for holder in getattr(exc, "holders", ()):
            print(f"  held by: {holder}", file=sys.stderr)
        for vote in getattr(exc, "votes", ()):
            print(f"  {vote}", file=sys.stderr)
        return exit_code(exc)
    except KeyboardInterrupt:
        return INTERRUPTED
    except BrokenPipeError:
        # The reader went away (``livemod log --follow | head``): not an error of ours.
        # Point stdout at /dev/null so the interpreter's final flush does not fail again.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
