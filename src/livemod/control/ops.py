"""The operations the control server performs, each over the public ``Host`` API only.

Every operation declares its arguments (name -> accepted types and default); the request
is checked against that before any of the host is touched, so a wrong type or an unknown
argument is a ``ProtocolError`` and never a half-done operation. Each handler returns plain
JSON, or :data:`STREAMING` to keep the request open (``log --follow``).

=========  ==========================================  =====================================
op         args (defaults)                             result
=========  ==========================================  =====================================
lsmod      --                                          [module row], in load order
insmod     path, params={}                             module row of the loaded module
rmmod      name, wait=false, timeout=null,             {"removed": name}; events
           force=false, cascade=false                  {"kind": "progress", "pending": [...]}
modprobe   name, params={}, remove=false,              module row; with remove:
           wait=false, timeout=null                    {"removed": [names]}
modinfo    target (path, name or alias)                modinfo record
plan       name, include_loaded=false                  [{name, version, path, loaded}], what
                                                       modprobe would load, in order
config     --                                          the effective configuration
depmod     folder=null                                 the host's depmod record
param      name, key=null, value=null                  no key: {key: {type, default, required,
                                                       writable, doc, value}}; else
                                                       {"name", "key", "value"} (value: set)
log        follow=false, limit=null                    [event]; follow: events, no reply
leaks      --                                          [leak]
status     --                                          statistics + socket, protocol, livemod
hooks      --                                          [{name, spec, implementations}], by name
=========  ==========================================  =====================================

A module row has name, version, state (the State's name), holds, pins, used_by, uses,
path, params, errors and state_seconds (see :mod:`.records`). ``timeout: null`` means the
host's default.
"""

from __future__ import annotations

import inspect
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import livemod

from ..errors import ParamError, ProtocolError
from .errors import NotSupported
from .protocol import VERSION
from .records import (
    config_to_dict,
    event_to_dict,
    info_to_dict,
    leak_to_dict,
    statistics_to_dict,
    status_to_dict,
    to_jsonable,
)
from .service_ops import service_ops

__all__ = ["OPS", "STREAMING", "Call", "check_args", "is_mutation"]

#: Returned by a handler whose request stays open, streaming events, until the client leaves.
STREAMING: Final = object()
_REQUIRED: Final = object()
_NUMBER: Final = (int, float)
_ANY: Final = (str, int, float, bool, list)


@dataclass(frozen=True)
class Call:
    """One request as a handler sees it.

    ``emit(event)`` queues an intermediate message to the client and returns False once
    the client is gone; ``on_close(fn)`` runs ``fn`` when the client disconnects (at once
    if it already has).
    """

    host: livemod.Host
    args: Mapping[str, Any]
    emit: Callable[[Mapping[str, Any]], bool]
    on_close: Callable[[Callable[[], None]], None]
    socket_path: str
    service: Any = None  # the service member of a worker (livemod.service), else None


Handler = Callable[[Call], object]
ArgSpec = Mapping[str, tuple[tuple[type, ...], object]]


def _status(host: livemod.Host, name: str) -> dict[str, Any]:
    for st in host.lsmod():
        if st.name == name:
            return status_to_dict(st)
    return {"name": name, "state": "GONE"}


def _params_arg(call: Call) -> dict[str, object]:
    params = call.args["params"]
    return {str(k): v for k, v in params.items()}


def _lsmod(call: Call) -> object:
    return [status_to_dict(st) for st in call.host.lsmod()]


def _insmod(call: Call) -> object:
    module = call.host.insmod(call.args["path"], **_params_arg(call))
    return _status(call.host, module.name)


def _progress(call: Call) -> Callable[[str, list[str]], object]:
    def progress(name: str, pending: list[str]) -> None:
        call.emit({"kind": "progress", "module": name, "pending": list(pending),
                   "message": f"waiting for: {'; '.join(pending)}"})

    return progress


def _rmmod(call: Call) -> object:
    a = call.args
    call.host.rmmod(a["name"], wait=a["wait"], timeout=a["timeout"], force=a["force"],
                    cascade=a["cascade"], progress=_progress(call))
    return {"removed": a["name"]}


def _modprobe(call: Call) -> object:
    a = call.args
    if a["remove"]:
        if a["params"]:
            raise ProtocolError("modprobe with remove takes no params")
        removed = call.host.modprobe_remove(a["name"], wait=a["wait"], timeout=a["timeout"])
        return {"removed": removed}
    module = call.host.modprobe(a["name"], **_params_arg(call))
    return _status(call.host, module.name)


def _upgrade(call: Call) -> object:
    a = call.args
    module = call.host.replace(a["name"], a["path"], timeout=a["timeout"],
                               cascade=a["cascade"], downgrade=a["downgrade"],
                               **_params_arg(call))
    return {**_status(call.host, module.name), "removal_pending": list(module.removal_pending)}


def _modinfo(call: Call) -> object:
    """The static record; for a loaded module also its state and the taints it caused
    (``mixed-copies`` among them) and the extension modules it has loaded."""
    info = info_to_dict(call.host.modinfo(call.args["target"]))
    for row in call.host.lsmod():
        if row.name == info["name"]:
            info.update(state=row.state.name, taints=list(row.taints),
                        native_loaded=list(row.native))
    return info


def _plan(call: Call) -> object:
    loaded = {st.name for st in call.host.lsmod()}
    return [{"name": info.name, "version": info.version, "path": info.path,
             "loaded": info.name in loaded}
            for info in call.host.modprobe_plan(call.args["name"],
                                                include_loaded=call.args["include_loaded"])]


def _config(call: Call) -> object:
    return config_to_dict(call.host.config, call.host.modpath)


def _depmod(call: Call) -> object:
    depmod = getattr(call.host, "depmod", None)
    if not callable(depmod):
        raise NotSupported("depmod is not supported by this host (it keeps no module index)")
    folder = call.args["folder"]
    if folder is None:
        return to_jsonable(depmod())
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                  inspect.Parameter.VAR_POSITIONAL)
    if not any(p.kind in positional for p in inspect.signature(depmod).parameters.values()):
        raise NotSupported("this host's depmod indexes its whole modpath; it cannot take a "
                           "folder (run depmod without one)")
    return to_jsonable(depmod(folder))


def _param(call: Call) -> object:
    host, name, key, value = call.host, call.args["name"], call.args["key"], call.args["value"]
    if key is not None and value is not None:
        return {"name": name, "key": key, "value": to_jsonable(host.set_param(name, key, value))}
    row = next((st for st in host.lsmod() if st.name == name), None)
    if row is None:
        raise livemod.ModuleNotFound(f"module {name!r} is not loaded (livemod lsmod lists "
                                     f"the loaded modules)", module=name)
    values = to_jsonable(row.params)
    if key is not None:
        if key not in values:
            raise ParamError(f"module {name!r} has no parameter {key!r} "
                             f"(known: {', '.join(sorted(values)) or 'none'})", module=name)
        return {"name": name, "key": key, "value": values[key]}
    specs = info_to_dict(host.modinfo(row.name))["params"]
    return {k: {**specs.get(k, {}), "value": v} for k, v in values.items()}


def _last(events: list[livemod.Event], limit: int | None) -> list[livemod.Event]:
    # As ``tail -n``: no limit is everything, 0 is nothing (``log -n 0 --follow``: only
    # what happens from now on).
    return events if limit is None else events[len(events) - limit:] if limit else []


def _log(call: Call) -> object:
    limit, host = call.args["limit"], call.host
    if not call.args["follow"]:
        events = host.events()
        return [event_to_dict(e) for e in _last(events, limit)]
    # Subscribe before reading the backlog so nothing falls in between; events that arrive
    # before the backlog is out are queued, then sent after it, once each, in order. The
    # lock also keeps two threads' events from being sent interleaved out of order.
    lock = threading.Lock()
    early: list[livemod.Event] = []
    ready = False

    def listener(ev: livemod.Event) -> None:
        with lock:
            if ready:
                call.emit(event_to_dict(ev))
            else:
                early.append(ev)

    call.on_close(host.on_event(listener))
    backlog = host.events()
    seen = {id(e) for e in backlog}
    with lock:
        for ev in _last(backlog, limit):
            call.emit(event_to_dict(ev))
        for ev in early:
            if id(ev) not in seen:
                call.emit(event_to_dict(ev))
        early.clear()
        ready = True
    return STREAMING


def _leaks(call: Call) -> object:
    return [leak_to_dict(leak) for leak in call.host.leaks()]


def _hooks(call: Call) -> object:
    return to_jsonable(call.host.hooks())


def _status_op(call: Call) -> object:
    record = statistics_to_dict(call.host.statistics())
    record.update(socket=call.socket_path, protocol=VERSION, livemod=livemod.__version__,
                  server_pid=os.getpid())
    if call.service is not None:
        record["service"] = call.service.status()
    return record


_WAIT: Final[ArgSpec] = {"wait": ((bool,), False), "timeout": ((*_NUMBER, type(None)), None)}
_PARAMS: Final[ArgSpec] = {"params": ((dict,), {})}

#: op -> (handler, argument spec, True when it changes the module table or a module).
OPS: Final[Mapping[str, tuple[Handler, ArgSpec, bool]]] = {
    "lsmod": (_lsmod, {}, False),
    "insmod": (_insmod, {"path": ((str,), _REQUIRED), **_PARAMS}, True),
    "rmmod": (_rmmod, {"name": ((str,), _REQUIRED), **_WAIT, "force": ((bool,), False),
                       "cascade": ((bool,), False)}, True),
    "modprobe": (_modprobe, {"name": ((str,), _REQUIRED), **_PARAMS, "remove": ((bool,), False),
                             **_WAIT}, True),
    "upgrade": (_upgrade, {"name": ((str,), _REQUIRED), "path": ((str, type(None)), None),
                           "timeout": ((int, float, type(None)), None),
                           "cascade": ((bool,), False), "downgrade": ((bool,), False),
                           **_PARAMS}, True),
    "modinfo": (_modinfo, {"target": ((str,), _REQUIRED)}, False),
    "plan": (_plan, {"name": ((str,), _REQUIRED), "include_loaded": ((bool,), False)}, False),
    "config": (_config, {}, False),
    "depmod": (_depmod, {"folder": ((str, type(None)), None)}, True),
    "param": (_param, {"name": ((str,), _REQUIRED), "key": ((str, type(None)), None),
                       "value": ((*_ANY, type(None)), None)}, False),
    "log": (_log, {"follow": ((bool,), False), "limit": ((int, type(None)), None)}, False),
    "leaks": (_leaks, {}, False),
    "status": (_status_op, {}, False),
    **service_ops(_REQUIRED),  # txn-prepare, txn-commit, txn-abort, service
    "hooks": (_hooks, {}, False),
}


def check_args(op: str, args: Mapping[str, Any]) -> dict[str, Any]:
    """``args`` checked against the op's spec, defaults filled in.

    Raises:
        ProtocolError: unknown op, unknown argument, missing argument or wrong type.
    """
    if op not in OPS:
        raise ProtocolError(f"unknown operation {op!r:.60} (known: {', '.join(sorted(OPS))})")
    spec = OPS[op][1]
    unknown = sorted(set(args) - set(spec))
    if unknown:
        raise ProtocolError(f"{op}: unknown argument(s) {', '.join(map(repr, unknown))} "
                            f"(accepted: {', '.join(spec) or 'none'})")
    checked: dict[str, Any] = {}
    for name, (types, default) in spec.items():
        if name not in args:
            if default is _REQUIRED:
                raise ProtocolError(f"{op}: missing argument {name!r}")
            checked[name] = dict(default) if isinstance(default, dict) else default
            continue
        value = args[name]
        # bool is an int: refuse true where a number is meant, and 1 where a flag is.
        if (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
            want = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            raise ProtocolError(f"{op}: argument {name!r} must be {want}, not {value!r:.40}")
        checked[name] = value
    if isinstance(checked.get("limit"), int) and checked["limit"] < 0:
        raise ProtocolError(f"{op}: argument 'limit' must not be negative")
    if isinstance(checked.get("timeout"), _NUMBER) and not 0 <= checked["timeout"] < 1e7:
        raise ProtocolError(f"{op}: argument 'timeout' must be between 0 and 1e7 seconds")
    return checked


def is_mutation(op: str, args: Mapping[str, Any]) -> bool:
    """Whether a (checked) request changes something: those run apart from the queries, so
    a slow one (``rmmod --wait``) never delays ``lsmod``."""
    if op == "param":
        return args.get("value") is not None
    return OPS[op][2]
