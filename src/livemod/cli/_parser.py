"""The ``livemod`` command line: subcommands, their options, and which function runs each.

Every subcommand has a description and every positional argument its help (a test walks
the parser to keep it so), every subcommand takes ``--json``, and ``livemod --help`` ends
with the exit codes. Under ``--json`` a usage error is a JSON object on stdout too.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import NoReturn

from . import _commands, _host
from ._etcd_args import add_etcd_commands

__all__ = ["USAGE", "build_parser"]

#: The exit code of a usage error (as argparse and the shells have it).
USAGE = 2

#: One line per exit code, for ``livemod --help`` (``livemod.cli.EXIT_CODES`` maps them).
_EXIT_CODES = """\
exit codes:
  0    success
  1    any other livemod error
  2    usage error (bad arguments)
  3    module not found (not loaded / not on the modpath / no such path)
  4    module already loaded
  5    manifest error (the module's metadata is unusable; a syntax error)
  6    init error (the module's body or init raised; the load was rolled back)
  7    dependency error (missing, wrong version, cycle)
  8    module busy (held, pinned, used, calls in flight; rmmod refused or rolled back)
  9    module going (being unloaded)
  10   param error (unknown, not writable, or does not convert)
  11   signature error (missing or invalid signature)
  12   protocol error (the host and the command do not understand each other)
  13   host unreachable (no host on the socket, or no answer)
  14   permission denied (the host refuses this user)
  15   not supported (this host or installation cannot do it; e.g. a missing extra)
  16   too many clients (retry)
  17   upgrade refused (a downgrade without --downgrade, dependents without --cascade)
  18   configuration error (livemod.toml)
  19   host forked (build a new host in the child)
  20   transaction aborted (a --service change, in every worker)
  21   desired-set error (a service's desired set is unusable)
  22   spec error (an implementation does not fit its hook's spec)
  23   engine unreachable (etcd did not answer: agent, rollout)
  24   rollout refused or stopped (lock held, lost a race, a batch aborted)
  130  interrupted (Ctrl-C)
"""


class _Parser(argparse.ArgumentParser):
    """argparse, except that a usage error under ``--json`` is printed as JSON on stdout."""

    def error(self, message: str) -> NoReturn:
        if _Parser.json_requested:
            print(json.dumps({"error": {"code": "usage", "exit": USAGE,
                                        "message": f"{self.prog}: {message}"}}, indent=2))
            sys.exit(USAGE)
        super().error(message)

    #: Set by ``main`` when the argv it parses (not ``sys.argv``) contains ``--json``.
    json_requested = False


def _params(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected param=value, got {text!r}")
    return key, value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not 0 <= value < 1e7:
        raise argparse.ArgumentTypeError(f"seconds must be between 0 and 1e7, got {text!r}")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a count, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"the count must not be negative, got {text!r}")
    return value


_PARAMS_HELP = "parameters for the module, typed as on a command line (greeting=hi)"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; each subcommand sets ``run`` to the function that performs it."""
    parser = _Parser(
        prog="livemod",
        description="Load, call, unload and upgrade modules in a live Python process; "
                    "every command but host, demo, check, keygen, sign and offline "
                    "modinfo/modprobe/depmod talks to a running host over its socket.",
        epilog=_EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    # Also accepted before the subcommand; SUPPRESS keeps the subcommand's default from
    # overwriting a value given there.
    parser.add_argument("--socket", default=argparse.SUPPRESS, metavar="PATH",
                        help="the host's control socket (default: $LIVEMOD_SOCKET, else "
                             "the only live socket in the default folder)")
    parser.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="print JSON for scripts (errors too, on stdout)")
    parser.add_argument("--service", default=argparse.SUPPRESS, metavar="NAME",
                        help="every worker of service NAME at once (Host(service=NAME)); "
                             "changes are all or nothing")
    remote = _Parser(add_help=False)
    remote.add_argument("--socket", default=argparse.SUPPRESS, metavar="PATH",
                        help="the host's control socket")
    remote.add_argument("--service", default=argparse.SUPPRESS, metavar="NAME",
                        help="every worker of service NAME at once")
    remote.add_argument("--timeout", type=_seconds, default=10.0, metavar="SECONDS",
                        help="how long to wait for the host to answer (default 10)")
    data = _Parser(add_help=False)
    data.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                      help="print JSON for scripts (errors too: an object with code, exit "
                           "and message, on stdout)")
    offline = _Parser(add_help=False)
    offline.add_argument("--modpath", action="append", default=[], metavar="DIR",
                         help="read modules from this folder here, offline, instead of "
                              "asking a host (repeatable)")
    offline.add_argument("--config", metavar="FILE",
                         help="read the modpath, aliases and blacklist from this "
                              "livemod.toml here, offline, instead of asking a host")

    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                parser_class=_Parser)

    def command(name: str, help: str, *parents: _Parser,
                description: str | None = None) -> argparse.ArgumentParser:
        family: list[_Parser] = [*parents, data]
        p = sub.add_parser(name, help=help, description=description or help,
                           parents=family)
        p.set_defaults(run=getattr(_commands, name, None))
        return p

    h = command("host", "run a host in the foreground, serving a control socket",
                description="Run a host in the foreground, serving a control socket, until "
                "SIGTERM or Ctrl-C (then every module is unloaded, dependents first). It "
                "prints one line when ready; with --json, JSON lines.")
    h.set_defaults(run=_host.run)
    h.add_argument("--modpath", action="append", default=[], metavar="DIR",
                   help="a folder of modules (repeatable)")
    h.add_argument("--socket", metavar="PATH", help="where to listen (default: "
                   "$XDG_RUNTIME_DIR/livemod/NAME.sock, else $TMPDIR/livemod-UID/NAME.sock)")
    h.add_argument("--name", help="the host's name (default host-PID-1)")
    h.add_argument("--load", action="append", default=[], metavar="NAME",
                   help="modprobe NAME at start (repeatable)")
    h.add_argument("--config", metavar="FILE", help="a livemod.toml configuration")
    h.add_argument("--allow-user", action="append", default=[], metavar="USER",
                   help="also admit this user (name or uid; repeatable)")
    h.add_argument("--allow-group", action="append", default=[], metavar="GROUP",
                   help="also admit members of this group (name or gid; repeatable)")
    h.add_argument("--timeout", type=_seconds, metavar="SECONDS",
                   help="default seconds rmmod waits for modules to go quiet (default 5)")
    h.add_argument("--verbose", action="store_true", help="print the event log to stderr")

    command("lsmod", "list the loaded modules", remote,
            description="List the loaded modules: version, state, holds and pins, the "
            "memory each holds (Size), and which modules use it.")
    p = command("insmod", "load one module file or package folder", remote,
                description="Load exactly one module from a path; its dependencies must "
                "be loaded already (modprobe loads them for you).")
    p.add_argument("path", help="a .py file or a package folder (relative to here)")
    p.add_argument("params", nargs="*", type=_params, metavar="param=value", help=_PARAMS_HELP)
    p = command("rmmod", "unload a module", remote,
                description="Unload a module: unpublish it, wait for calls in flight, run "
                "its exit, free it and check that its code is gone. Refused at once while "
                "it is held or used, unless --wait, --force or --cascade.")
    p.add_argument("name", help="the loaded module's name")
    p.add_argument("--wait", nargs="?", type=_seconds, const=-1.0, default=None,
                   metavar="SECONDS", help="wait for holds and pins to be released, up to "
                   "SECONDS (default: the host's timeout), showing what it waits for")
    p.add_argument("--force", action="store_true", help="do not wait at all (taints the host)")
    p.add_argument("--cascade", action="store_true", help="remove the modules using it first")
    p = command("modprobe", "load a module by name from the modpath, dependencies first",
                remote, offline,
                description="Load a module by name or alias from the modpath, dependencies "
                "first (-r removes it and the dependencies loaded for it). -n and "
                "--show-depends only say what would be loaded; -c prints the effective "
                "configuration. With --modpath or --config these three work offline.")
    p.add_argument("-r", "--remove", action="store_true",
                   help="remove it, then the dependencies loaded only for it")
    p.add_argument("-n", "--dry-run", action="store_true",
                   help="do everything but load: print the insmod lines it would run")
    p.add_argument("--show-depends", action="store_true",
                   help="print the insmod line of the module and each dependency, loaded "
                        "or not, and load nothing")
    p.add_argument("-c", "--showconfig", action="store_true",
                   help="print the effective configuration (modpath, aliases, blacklist, "
                        "options, soft dependencies) and exit")
    p.add_argument("name", nargs="?", help="a module name or alias (not with -c)")
    p.add_argument("params", nargs="*", type=_params, metavar="param=value", help=_PARAMS_HELP)
    p = command("upgrade", "hot-upgrade a loaded module (state handed over, one switch)",
                remote, description="Hot-upgrade a loaded module: the new version is "
                "loaded beside the old one, handed its state, and switched in one step per "
                "hook. A downgrade needs --downgrade; dependents that imported its objects "
                "need --cascade.")
    p.add_argument("name", help="the loaded module's name")
    p.add_argument("path", nargs="?", help="the new version (default: its own file, re-read)")
    p.add_argument("params", nargs="*", type=_params, metavar="param=value",
                   help="parameters that change with the upgrade (the rest carry over)")
    p.add_argument("--cascade", action="store_true",
                   help="also reload the modules that imported its objects directly")
    p.add_argument("--downgrade", action="store_true", help="allow an older version")
    p = command("watch", "upgrade modules as their files are saved (development)", remote,
                description="Upgrade the host's modules as their files are saved, until "
                "Ctrl-C. Refuses downgrades as upgrade does (unless --downgrade); a syntax "
                "error or failing init keeps the running version. Needs the watch extra.")
    p.add_argument("folders", nargs="*", metavar="DIR",
                   help="folders to watch (default: those of the loaded modules)")
    p.add_argument("--downgrade", action="store_true",
                   help="also apply saved files whose version is older")
    p = command("modinfo", "show a module's metadata (never runs it)", remote, offline,
                description="Show a module's metadata, read statically (its code never "
                "runs). A path is read here; a name or alias is resolved offline with "
                "--modpath/--config, else asked of the running host.")
    p.add_argument("target", metavar="NAME|PATH",
                   help="a module file or folder, or a module name or alias")
    p = command("depmod", "rebuild the module index (of DIR here, or the host's modpath)",
                remote, description="Rebuild the module index that modprobe searches: of "
                "DIR here, offline, or of the running host's modpath.")
    p.add_argument("folder", nargs="?", metavar="DIR",
                   help="index this folder here, offline (no host needed)")
    p = command("param", "show or set a loaded module's parameters", remote,
                description="List a loaded module's parameters, read one, or set a "
                "writable one (the module is told).")
    p.add_argument("name", help="the loaded module's name")
    p.add_argument("setting", nargs="?", metavar="key[=value]",
                   help="a parameter to read (key) or set (key=value)")
    p = command("log", "show the host's event log (like dmesg)", remote,
                description="Show the host's event log: loads, failed loads, refused and "
                "failed upgrades, unloads, parameters, taints. --follow keeps printing "
                "new events until Ctrl-C, like dmesg -w.")
    p.add_argument("-f", "--follow", action="store_true",
                   help="keep printing new events until interrupted")
    p.add_argument("-n", "--limit", type=_count, metavar="N",
                   help="only the last N events (0: none of the past ones)")
    command("leaks", "unloaded modules whose objects are still alive, and why", remote,
            description="List unloaded modules whose objects are still alive, with the "
            "chains of referrers that keep them.")
    command("status", "the host's name, pid, uptime, taints and counts", remote,
            description="Show the host's name, pid, socket, uptime, counts and taints.")
    command("hooks", "each hook: its spec and its implementations in call order", remote,
            description="List each hook with a spec or implementations: its signature, "
            "firstresult, first doc line, and its implementations in call order.")
    p = command("keygen", "make an Ed25519 key pair for signing modules (KEY, KEY.pub)",
                description="Make an Ed25519 key pair: KEY (mode 0600) signs modules, "
                "KEY.pub goes into a host's trusted_keys folder. Needs the sign extra.")
    p.add_argument("key", metavar="KEY", help="where to write the private key (mode 0600)")
    p = command("sign", "sign a module file or package folder (writes MODULE.sig)",
                description="Sign every file of a module as it is now (writes its .sig "
                "beside it). Needs the sign extra.")
    p.add_argument("module", metavar="MODULE", help="a .py file or a package folder")
    p.add_argument("--key", required=True, metavar="KEY", help="the private key")
    p = command("check", "test module files: load, call, upgrade to itself, unload, leaks",
                description="For module authors' CI: each module is loaded into a fresh "
                "host (its dependencies from its folder), its hooks' smoke cases called, "
                "upgraded to itself and unloaded, and its code must be gone. Exit 0 when "
                "every module is clean, 1 otherwise.")
    p.add_argument("paths", nargs="+", metavar="PATH", help="module files or package folders")
    p.add_argument("--param", action="append", default=[], type=_params, dest="params",
                   metavar="param=value", help="a parameter for the modules (repeatable)")
    p = command("demo", "run a host under load and show what livemod guarantees",
                description="Run a host under load in this process (no socket): modules "
                "unloaded and loaded under it, a failed init, a refused unload, a leak "
                "found and named.")
    p.set_defaults(run=_commands.demo)
    p.add_argument("--seconds", type=float, default=12.0, help="about how long to run")
    add_etcd_commands(sub, data, _params)
    return parser
