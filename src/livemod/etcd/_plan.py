"""A rollout's change: what it does to a module set, the local operation it becomes on a
machine, and the change that undoes it.

A change is a small JSON record (``{"op": "upgrade", "name": ..., "sha256": ...}``) kept in
the desired record and in every batch. The coordinator works out the module set it makes,
statically (the new file's manifest is read, never run), so the desired record says what
every machine will run before any machine runs it. On a machine, the agent turns it into one
operation of :class:`livemod.service.Coordinator` (``upgrade``, ``insmod``, ``rmmod``,
``param``), with the file taken out of the engine to a local path.

``undo`` is the inverse change against the generation a change was made from: an upgrade
goes back to the old file (a downgrade), an insmod becomes an rmmod, an rmmod an insmod of
the old file with its old params, a param its old value.
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any

from .._manifest import read_manifest
from ..errors import LivemodError, RolloutError
from ..service import ModuleSpec

__all__ = ["CHANGES", "describe", "inverse", "local_operation", "make_change", "target_of"]

CHANGES = ("upgrade", "insmod", "rmmod", "param")


def describe(change: dict[str, Any]) -> str:
    op, name = change.get("op"), change.get("name")
    if op == "param":
        return f"param {name} {change.get('key')}={change.get('value')}"
    if op in ("upgrade", "insmod"):
        return f"{op} {name} {change.get('version', '')} ({str(change.get('sha256'))[:12]})"
    return f"{op} {name}"


def make_change(op: str, *, name: str | None = None, path: str | None = None,
                sha256: str = "", params: dict[str, Any] | None = None,
                key: str | None = None, value: Any = None) -> dict[str, Any]:
    """The change record for a CLI change (``path`` is read here, statically).

    Raises:
        RolloutError: an unknown op, a missing argument, a file whose manifest names
            another module.
    """
    if op not in CHANGES:
        raise RolloutError(f"{op!r} is not a rollout change (those are: {', '.join(CHANGES)})")
    change: dict[str, Any] = {"op": op, "name": name}
    if op in ("upgrade", "insmod"):
        if not path:
            raise RolloutError(f"rollout {op} needs the module file's PATH")
        try:
            info = read_manifest(path)
        except LivemodError as exc:
            raise RolloutError(f"cannot roll out {path}: {exc}") from None
        if op == "upgrade" and name is not None and info.name != name:
            raise RolloutError(f"{path} is module {info.name!r}, not {name!r}: check the "
                               f"name and the file")
        change.update(name=info.name, version=info.version, sha256=sha256,
                      file=os.path.basename(path), params=dict(params or {}))
    elif op == "param":
        if not key or value is None:
            raise RolloutError("rollout param needs MODULE key=value")
        change.update(key=key, value=value)
    if not change.get("name"):
        raise RolloutError(f"rollout {op} needs a module name")
    return change


def _find(specs: tuple[ModuleSpec, ...], name: str, generation: int) -> ModuleSpec:
    for spec in specs:
        if spec.name == name:
            return spec
    have = ", ".join(s.name for s in specs) or "none"
    raise RolloutError(f"module {name!r} is not in generation {generation} of the service "
                       f"(its modules: {have}); nothing was changed")


def target_of(change: dict[str, Any], base: tuple[ModuleSpec, ...], generation: int
              ) -> tuple[ModuleSpec, ...]:
    """The module set ``change`` makes of ``base`` (generation ``generation``).

    Raises:
        RolloutError: the module is missing (or, for insmod, already there).
    """
    op, name = change["op"], change["name"]
    if op == "insmod":
        if any(s.name == name for s in base):
            raise RolloutError(f"module {name!r} is already in generation {generation}; use "
                               f"rollout upgrade")
        return (*base, ModuleSpec(name, change["version"], change["file"], change["sha256"],
                                  dict(change.get("params") or {})))
    old = _find(base, name, generation)
    if op == "rmmod":
        return tuple(s for s in base if s.name != name)
    if op == "upgrade":
        new = ModuleSpec(name, change["version"], change["file"], change["sha256"],
                         {**old.params, **dict(change.get("params") or {})})
    else:
        new = replace(old, params={**old.params, change["key"]: change["value"]})
    return tuple(new if s.name == name else s for s in base)


def inverse(change: dict[str, Any], base: tuple[ModuleSpec, ...], generation: int
            ) -> dict[str, Any]:
    """The change that turns the set ``change`` made back into ``base``."""
    op, name = change["op"], change["name"]
    if op == "insmod":
        return {"op": "rmmod", "name": name}
    old = _find(base, name, generation)
    if op == "param":
        if change["key"] not in old.params:
            raise RolloutError(f"cannot undo param {name} {change['key']}: generation "
                               f"{generation} does not record its old value")
        return {"op": "param", "name": name, "key": change["key"],
                "value": old.params[change["key"]]}
    return {"op": "insmod" if op == "rmmod" else "upgrade", "name": name,
            "version": old.version, "sha256": old.sha256, "file": old.path,
            "params": dict(old.params), "downgrade": True}


def local_operation(change: dict[str, Any], path: str | None) -> tuple[str, dict[str, Any]]:
    """The :class:`~livemod.service.Coordinator` op and args of ``change`` on a machine
    (``path``: the change's file, taken out of the engine)."""
    op, name = change["op"], change["name"]
    params = {str(k): v for k, v in dict(change.get("params") or {}).items()}
    if op == "upgrade":
        return op, {"name": name, "path": path, "params": params, "cascade": False,
                    "downgrade": bool(change.get("downgrade"))}
    if op == "insmod":
        return op, {"path": path, "params": params}
    if op == "rmmod":
        return op, {"name": name, "wait": True, "timeout": None, "force": False,
                    "cascade": False}
    return op, {"name": name, "key": change["key"], "value": change["value"]}
