"""The plain-JSON shapes of livemod's public records, as the socket and ``--json`` show them.

One function per record, so the server and the CLI (which also prints local ``modinfo``)
agree on every field name. Enums become their names; tuples become lists.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

from .. import Event, HostStatistics, Leak, ModuleInfo, ModuleStatus, Taint
from ..config import Config

__all__ = [
    "config_to_dict",
    "event_to_dict",
    "info_to_dict",
    "leak_to_dict",
    "statistics_to_dict",
    "status_to_dict",
    "taint_to_dict",
    "to_jsonable",
]


def to_jsonable(obj: object) -> Any:
    """A JSON-safe copy of ``obj``: records and mappings become objects, sequences lists,
    enums their names, paths strings, anything else its ``str``."""
    if obj is None or isinstance(obj, bool | int | str):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else str(obj)
    if isinstance(obj, enum.Enum):
        return obj.name
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, set | frozenset):
        return sorted((to_jsonable(v) for v in obj), key=repr)
    if isinstance(obj, list | tuple):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return str(obj)


def status_to_dict(st: ModuleStatus) -> dict[str, Any]:
    """One ``lsmod`` row. ``state_seconds``: how long it has been in its state."""
    return {
        "name": st.name,
        "version": st.version,
        "state": st.state.name,
        "holds": st.holds,
        "pins": st.pins,
        "used_by": list(st.used_by),
        "uses": list(st.uses),
        "path": st.path,
        "params": to_jsonable(st.params),
        "errors": st.errors,
        "state_seconds": round(max(0.0, time.monotonic() - st.since), 3),
        "taints": list(st.taints),
        "native": list(st.native),
        "size": st.size,
    }


def info_to_dict(info: ModuleInfo) -> dict[str, Any]:
    """What ``modinfo`` shows: static metadata, never the result of running the module.
    ``native``: the package's extension module files (native code)."""
    return {
        "name": info.name,
        "version": info.version,
        "description": info.description,
        "license": info.license,
        "author": info.author,
        "path": info.path,
        "depends": [str(d) for d in info.depends],
        "aliases": list(info.aliases),
        "native": list(info.native),
        "params": {
            p.name: {
                "type": p.type,
                "default": None if p.required else to_jsonable(p.default),
                "required": p.required,
                "writable": p.writable,
                "doc": p.doc,
            }
            for p in info.params.values()
        },
    }


def config_to_dict(config: Config | None, modpath: Sequence[str]) -> dict[str, Any]:
    """The effective configuration (``modprobe -c``): the host's modpath and, when it was
    started with a ``livemod.toml``, that file's aliases, blacklist, options, soft
    dependencies and start-up list."""
    record: dict[str, Any] = {"config": None, "modpath": list(modpath), "aliases": {},
                              "blacklist": [], "options": {}, "softdeps": {}, "load": []}
    if config is not None:
        record.update(
            config=config.path, aliases=dict(config.aliases), blacklist=list(config.blacklist),
            options={m: to_jsonable(dict(o)) for m, o in config.options.items()},
            softdeps={m: {"pre": list(d.pre), "post": list(d.post)}
                      for m, d in config.softdeps.items()},
            load=list(config.load),
        )
    return record


def event_to_dict(ev: Event) -> dict[str, Any]:
    """One entry of the event log (``when``: seconds since the epoch)."""
    return {
        "when": ev.when,
        "kind": ev.kind,
        "module": ev.module,
        "message": ev.message,
        "data": to_jsonable(ev.data),
    }


def leak_to_dict(leak: Leak) -> dict[str, Any]:
    """An unloaded module whose objects survive, with the referrer chains."""
    return {
        "name": leak.name,
        "version": leak.version,
        "unloaded_at": leak.unloaded_at,
        "survivors": list(leak.survivors),
        "chains": list(leak.chains),
    }


def taint_to_dict(taint: Taint) -> dict[str, Any]:
    """One taint of the host."""
    return {"flag": taint.flag, "module": taint.module, "when": taint.when,
            "reason": taint.reason}


def statistics_to_dict(stats: HostStatistics) -> dict[str, Any]:
    """``host.statistics()`` as an object; taints as a list of objects."""
    record = to_jsonable(stats)
    record["taints"] = [taint_to_dict(t) for t in stats.taints]
    return dict(record)
