"""``livemod rollout apply desired.toml``: a whole module set, turned into the change it
needs.

The file lists the modules the service should run, each by file (relative to the file's
own folder) and optionally with params::

    [[module]]
    path = "modules/hello_v2.py"
    params = { greeting = "hi" }

It is compared with the generation a rollout would start from (by name, file hash and
params). A rollout moves the machines by **one** change at a time (one local all-or-nothing
transaction per machine, as ``upgrade``, ``insmod``, ``rmmod`` and ``param`` are), so a
file that differs in exactly one of those ways is rolled out as that change; one that
differs in more is refused with the list, to roll out one at a time; one that differs in
nothing is refused as having nothing to do.
"""

from __future__ import annotations

import os
import tomllib
from typing import Any

from .._manifest import read_manifest
from ..errors import LivemodError, RolloutError
from ..service import ModuleSpec, file_hash

__all__ = ["single_change"]


def _read(path: str) -> list[dict[str, Any]]:
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise RolloutError(f"cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise RolloutError(f"{path} is not valid TOML: {exc}") from None
    modules = data.get("module", [])
    if not isinstance(modules, list) or not all(isinstance(m, dict) for m in modules):
        raise RolloutError(f"{path}: give the modules as [[module]] tables")
    folder = os.path.dirname(os.path.abspath(path))
    found = []
    for i, m in enumerate(modules):
        if not isinstance(m.get("path"), str):
            raise RolloutError(f"{path}: module {i + 1} needs path = \"FILE\"")
        params = m.get("params", {})
        if not isinstance(params, dict):
            raise RolloutError(f"{path}: module {i + 1}: params must be a table")
        file = os.path.join(folder, m["path"])
        try:
            info = read_manifest(file)
        except LivemodError as exc:
            raise RolloutError(f"{path}: module {i + 1}: {exc}") from None
        found.append({"name": info.name, "path": file, "sha256": file_hash(file),
                      "params": {str(k): v for k, v in params.items()}})
    return found


def single_change(path: str, base: tuple[ModuleSpec, ...], generation: int
                  ) -> dict[str, Any]:
    """The keyword arguments of ``Rollout.start`` for the one change ``path`` asks for.

    Raises:
        RolloutError: unreadable, no change, or more than one.
    """
    wanted = _read(path)
    have = {s.name: s for s in base}
    changes: list[tuple[str, dict[str, Any]]] = []
    names = {m["name"] for m in wanted}
    for name in have:
        if name not in names:
            changes.append((f"rmmod {name}", {"op": "rmmod", "name": name}))
    for m in wanted:
        old = have.get(m["name"])
        if old is None:
            changes.append((f"insmod {m['path']}", {"op": "insmod", "path": m["path"],
                                                    "params": m["params"]}))
        elif old.sha256 != m["sha256"]:
            changes.append((f"upgrade {m['name']} {m['path']}", {
                "op": "upgrade", "name": m["name"], "path": m["path"],
                "params": m["params"]}))
        else:
            for key, value in m["params"].items():
                if str(old.params.get(key)) != str(value):
                    changes.append((f"param {m['name']} {key}={value}", {
                        "op": "param", "name": m["name"], "key": key, "value": value}))
    if not changes:
        raise RolloutError(f"{path} asks for nothing new: generation {generation} already "
                           f"runs that set; nothing was changed")
    if len(changes) > 1:
        lines = tuple(c for c, _ in changes)
        raise RolloutError(f"{path} asks for {len(changes)} changes from generation "
                           f"{generation}; a rollout carries one: roll them out one at a "
                           f"time (nothing was changed): " + "; ".join(lines), votes=lines)
    return changes[0][1]
