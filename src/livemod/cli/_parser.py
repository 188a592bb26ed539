"""The ``livemod`` command line: subcommands, their options, and which function runs each."""

from __future__ import annotations

import argparse

from . import _commands, _host

__all__ = ["build_parser"]


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


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; each subcommand sets ``run`` to the function that performs it."""
    parser = argparse.ArgumentParser(
        prog="livemod",
        description="Load, call and unload modules in a live Python process.",
        epilog="Exit codes: see `python -c 'import livemod.cli; help(livemod.cli)'`.",
    )
    # Also accepted before the subcommand; SUPPRESS keeps the subcommand's default from
    # overwriting a value given there.
    parser.add_argument("--socket", default=argparse.SUPPRESS, metavar="PATH",
                        help="the host's control socket (default: $LIVEMOD_SOCKET, else "
                             "the only socket in the default folder)")
    remote = argparse.ArgumentParser(add_help=False)
    remote.add_argument("--socket", default=argparse.SUPPRESS, metavar="PATH",
                        help="the host's control socket")
    remote.add_argument("--timeout", type=_seconds, default=10.0, metavar="SECONDS",
                        help="how long to wait for the host to answer (default 10)")
    data = argparse.ArgumentParser(add_help=False)
    data.add_argument("--json", action="store_true", help="print JSON for scripts")

    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str, *parents: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help, parents=list(parents))
        p.set_defaults(run=getattr(_commands, name, None))
        return p

    h = sub.add_parser("host", help="run a host in the foreground, serving a control socket")
    h.set_defaults(run=_host.run)
    h.add_argument("--modpath", action="append", default=[], metavar="DIR",
                   help="a folder of modules (repeatable)")
    h.add_argument("--socket", metavar="PATH", help="where to listen (default: "
                   "$XDG_RUNTIME_DIR/livemod/NAME.sock)")
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

    command("lsmod", "list the loaded modules", remote, data)
    p = command("insmod", "load one module file or package folder", remote, data)
    p.add_argument("path", help="a .py file or a package folder")
    p.add_argument("params", nargs="*", type=_params, metavar="param=value")
    p = command("rmmod", "unload a module", remote, data)
    p.add_argument("name")
    p.add_argument("--wait", nargs="?", type=_seconds, const=-1.0, default=None,
                   metavar="SECONDS", help="wait for holds and pins to be released, up to "
                   "SECONDS (default: the host's timeout), showing what it waits for")
    p.add_argument("--force", action="store_true", help="do not wait at all (taints the host)")
    p.add_argument("--cascade", action="store_true", help="remove the modules using it first")
    p = command("modprobe", "load a module by name from the modpath, dependencies first",
                remote, data)
    p.add_argument("-r", "--remove", action="store_true",
                   help="remove it, then the dependencies loaded only for it")
    p.add_argument("name")
    p.add_argument("params", nargs="*", type=_params, metavar="param=value")
    p = command("upgrade", "hot-upgrade a loaded module (state handed over, one switch)",
                remote, data)
    p.add_argument("name")
    p.add_argument("path", nargs="?", help="the new version (default: its own file, re-read)")
    p.add_argument("params", nargs="*", type=_params, metavar="param=value")
    p.add_argument("--cascade", action="store_true",
                   help="also reload the modules that imported its objects directly")
    p.add_argument("--downgrade", action="store_true", help="allow an older version")
    p = command("watch", "upgrade modules as their files are saved (development)", remote)
    p.add_argument("folders", nargs="*", metavar="DIR",
                   help="folders to watch (default: those of the loaded modules)")
    p = command("modinfo", "show a module's metadata (never runs it)", remote, data)
    p.add_argument("target", metavar="NAME|PATH",
                   help="a path is read here; a name is asked of the host")
    p = command("depmod", "rebuild the module index (of DIR here, or the host's modpath)",
                remote, data)
    p.add_argument("folder", nargs="?", metavar="DIR",
                   help="index this folder here, offline (no host needed)")
    p = command("param", "show or set a loaded module's parameters", remote, data)
    p.add_argument("name")
    p.add_argument("setting", nargs="?", metavar="key[=value]")
    p = command("log", "show the host's event log (like dmesg)", remote, data)
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new events")
    p.add_argument("-n", "--limit", type=int, metavar="N", help="only the last N events")
    command("leaks", "unloaded modules whose objects are still alive, and why", remote, data)
    command("status", "the host's name, pid, uptime, taints and counts", remote, data)
    command("hooks", "each hook: its spec and its implementations in call order", remote, data)
    p = command("keygen", "make an Ed25519 key pair for signing modules (KEY, KEY.pub)")
    p.add_argument("key", metavar="KEY", help="where to write the private key (mode 0600)")
    p = command("sign", "sign a module file or package folder (writes MODULE.sig)")
    p.add_argument("module", metavar="MODULE", help="a .py file or a package folder")
    p.add_argument("--key", required=True, metavar="KEY", help="the private key")

    d = sub.add_parser("demo", help="run a host under load and show what livemod guarantees")
    d.set_defaults(run=_commands.demo)
    d.add_argument("--seconds", type=float, default=12.0, help="about how long to run")
    return parser
