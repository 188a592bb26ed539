"""The ``livemod`` command.

It is a thin layer over the public API (and, for commands that talk to a running host, the
control socket client). Each error class has its own exit code, so scripts can tell them
apart without parsing messages.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Final

from . import errors

__all__ = ["EXIT_CODES", "main"]

#: Exit code per error class (most specific first); documented in the README.
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
    errors.LivemodError: 1,
}


def exit_code(exc: errors.LivemodError) -> int:
    for cls, code in EXIT_CODES.items():
        if isinstance(exc, cls):
            return code
    return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="livemod", description="Load, call and unload modules in a live Python process."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = sub.add_parser("demo", help="run a host under load and show what livemod guarantees")
    demo.add_argument("--seconds", type=float, default=12.0, help="about how long to run")
    info = sub.add_parser("modinfo", help="show a module's static metadata (never runs it)")
    info.add_argument("path", help="a module file or package folder")
    info.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def _modinfo(path: str, as_json: bool) -> int:
    from ._manifest import read_manifest

    info = read_manifest(path)
    record = {
        "name": info.name, "version": info.version, "description": info.description,
        "license": info.license, "author": info.author, "path": info.path,
        "depends": [str(d) for d in info.depends], "aliases": list(info.aliases),
        "params": {
            p.name: {"type": p.type, "default": None if p.required else p.default,
                     "required": p.required, "writable": p.writable, "doc": p.doc}
            for p in info.params.values()
        },
    }
    if as_json:
        print(json.dumps(record, indent=2, default=list))
        return 0
    for key in ("name", "version", "description", "license", "author", "path"):
        print(f"{key + ':':<13}{record[key]}")
    print(f"{'depends:':<13}{', '.join(record['depends']) or '-'}")
    print(f"{'aliases:':<13}{', '.join(info.aliases) or '-'}")
    for p in info.params.values():
        default = "required" if p.required else f"default {p.default!r}"
        flag = ", writable" if p.writable else ""
        print(f"{'parm:':<13}{p.name}:{p.type} ({default}{flag}) {p.doc}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "demo":
            from ._demo import run

            return run(seconds=args.seconds)
        if args.command == "modinfo":
            return _modinfo(args.path, args.json)
    except errors.LivemodError as exc:
        print(f"livemod {args.command}: {exc}", file=sys.stderr)
        return exit_code(exc)
    return 2


if __name__ == "__main__":
    sys.exit(main())
