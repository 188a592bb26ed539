"""The prepare half of each service-wide operation, and its commit and abort.

Erlang's release handler does every fallible step before a point of no return. Each
function here does exactly that for one operation, in one worker, with the host's
operation lock held by the caller (the transaction's own thread, until the decision):

==========  ===============================================  ==========================
op          prepare (may fail; nothing switched)              commit (cannot fail)
==========  ===============================================  ==========================
upgrade     v2 loaded and initialised beside v1, handover     the switch, v1 drains
insmod      body and init run, registrations staged           publish
modprobe    the chain, dependencies first, all staged         publish each, in order
rmmod       unpublished, waited until quiet (GOING)           exit, undo, GONE
param       set, the module's on_param callbacks agreed       nothing more
==========  ===============================================  ==========================

Abort undoes prepare: staged versions are discarded, a module taken down is published
again, a parameter gets its old value back. In every case v1 never stopped serving --
except ``rmmod`` and ``param``, whose prepared state is visible for the length of the
transaction (unpublished; the new value), as it must be for their refusal to count.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from .. import _deps, _upgrade
from .._state import State
from ..control.errors import NotSupported
from ..control.records import status_to_dict, to_jsonable
from ..errors import LivemodError, ModuleBusy
from ._desired import ModuleSpec, file_hash

if TYPE_CHECKING:
    from .. import Host
    from .._instance import Instance

__all__ = ["Staged", "current_specs", "stage"]

_log = logging.getLogger("livemod.service")

Specs = list[ModuleSpec]


@dataclass
class Staged:
    """A prepared operation: ``commit()`` returns its JSON result; ``abort()`` undoes it;
    ``after(specs)`` is the worker's module set once committed."""

    commit: Callable[[], Any]
    abort: Callable[[], None]
    after: Callable[[Specs], Specs]


def spec_of(inst: Instance) -> ModuleSpec:
    return ModuleSpec(inst.info.name, inst.info.version, inst.info.path,
                      file_hash(inst.info.path), to_jsonable(inst.params.as_dict()))


def current_specs(host: Host) -> Specs:
    """The LIVE modules of ``host``, in load order, as desired-set entries."""
    with host._table.lock:
        live = [i for i in host._table.names.values() if i.state is State.LIVE]
    return [spec_of(i) for i in live]


def _row(host: Host, name: str) -> dict[str, Any]:
    for st in host.lsmod():
        if st.name == name and st.state is State.LIVE:
            return status_to_dict(st)
    return {"name": name, "state": "GONE"}


def _params_of(args: Mapping[str, Any]) -> dict[str, object]:
    return {str(k): v for k, v in dict(args.get("params") or {}).items()}


def _upgrade_op(host: Host, a: Mapping[str, Any]) -> Staged:
    brought = _upgrade.stage(host._life, a["name"], a.get("path"), cascade=bool(a.get("cascade")),
                             downgrade=bool(a.get("downgrade")), params=_params_of(a))
    new_specs = {new.name: spec_of(new) for _, new in brought}

    def commit() -> Any:
        module = _upgrade.commit(host._life, brought, timeout=a.get("timeout"))
        return {**_row(host, module.name), "removal_pending": list(module.removal_pending)}

    def after(specs: Specs) -> Specs:
        return [new_specs.get(s.name, s) for s in specs]

    return Staged(commit, lambda: _upgrade.abort(host._life, brought), after)


def _stage_load(host: Host, path: str, params: Mapping[str, object]) -> Instance:
    """``Lifecycle.load`` without its publish: COMING, every registration staged."""
    return host._life.stage_load(path, params)


def _take_down(host: Host, inst: Instance, *, wait: bool, timeout: float,
               force: bool) -> list[Any]:
    """Steps 1-4 of ``Lifecycle.unload`` (GOING and quiet, or LIVE again and ModuleBusy);
    ``teardown.finish`` is the commit, which cannot fail."""
    return host._life.take_down(inst, wait=wait, timeout=timeout, force=force)


def _load_chain(host: Host, paths: list[tuple[str, dict[str, object], bool]]) -> Staged:
    """Stage loads in order (each may depend on those before it), or undo them all."""
    staged: list[Instance] = []
    try:
        for path, params, auto in paths:
            inst = _stage_load(host, path, params)
            inst.auto = auto
            staged.append(inst)
            host._table.incoming[inst.name] = inst  # the next ones may depend on it
    except BaseException:
        for inst in reversed(staged):
            host._life.teardown.discard(inst)
        host._table.incoming.clear()
        raise
    host._table.incoming.clear()
    specs = [spec_of(i) for i in staged]

    def commit() -> Any:
        for inst in staged:
            host._life._publish(inst)
        return _row(host, staged[-1].name)

    def abort() -> None:
        for inst in reversed(staged):
            host._life.teardown.discard(inst)

    return Staged(commit, abort, lambda current: [*current, *specs])


def _insmod_op(host: Host, a: Mapping[str, Any]) -> Staged:
    return _load_chain(host, [(a["path"], _params_of(a), False)])


def _modprobe_op(host: Host, a: Mapping[str, Any]) -> Staged:
    if a.get("remove"):
        raise NotSupported("modprobe -r is not a service-wide operation; use "
                           "livemod --service NAME rmmod MODULE")
    name, params = a["name"], _params_of(a)
    if host.config is not None:
        plan = host.config.modprobe_plan(name, params)
        name, params = plan.name, dict(plan.params)
    loaded = host._table.find(name)
    if loaded is not None:
        if params:
            raise LivemodError(f"module {loaded.name!r} is already loaded; rmmod it first "
                               f"to load it with other parameters", module=loaded.name)
        row = _row(host, loaded.name)
        return Staged(lambda: row, lambda: None, lambda specs: specs)
    with host._table.lock:
        versions = {n: i.info.version for n, i in host._table.names.items()}
    order = _deps.resolve_load_order(name, host._modpath.find, versions)
    return _load_chain(host, [(info.path, params if info is order[-1] else {},
                               info is not order[-1]) for info in order])


def _rmmod_op(host: Host, a: Mapping[str, Any]) -> Staged:
    inst = host._table.get_live(a["name"])
    users = host._table.used_by(inst)
    if users and not a.get("cascade"):
        raise ModuleBusy(f"cannot remove {inst.name!r}: used by "
                         f"{', '.join(map(repr, users))} (rmmod {users[0]} first, or "
                         f"use --cascade)", module=inst.name,
                         holders=tuple(f"module {u!r}" for u in users))
    names = [*host._table.dependents_closure(inst.name), inst.name] if users else [inst.name]
    limit = host.timeout if a.get("timeout") is None else float(a["timeout"])
    down: list[tuple[Instance, list[Any]]] = []
    try:
        for name in names:
            target = host._table.names[name]
            down.append((target, _take_down(host, target, wait=bool(a.get("wait")),
                                            timeout=limit, force=bool(a.get("force")))))
    except BaseException:
        for target, removed in reversed(down):
            host._life._republish(target, removed, "the service-wide rmmod was aborted")
        raise

    def commit() -> Any:
        for target, removed in down:
            removed.clear()  # the leak check must not find them here
            host._life.teardown.finish(target)
        down.clear()
        return {"removed": a["name"]}

    def abort() -> None:
        for target, removed in reversed(down):
            host._life._republish(target, removed, "the service-wide rmmod was aborted")
        down.clear()

    gone = set(names)
    return Staged(commit, abort, lambda specs: [s for s in specs if s.name not in gone])


def _param_op(host: Host, a: Mapping[str, Any]) -> Staged:
    name, key = a["name"], a["key"]
    if key is None or a.get("value") is None:
        raise LivemodError("a service-wide param needs key=value")
    inst = host._table.get_live(name)
    old = inst.params.as_dict().get(key)
    new = host.set_param(name, key, a["value"])  # the module may refuse: a "no" vote

    def abort() -> None:
        try:
            host.set_param(name, key, old)
        except LivemodError as exc:  # pragma: no cover - a module refusing its old value
            _log.error("abort could not restore %s.%s=%r: %s", name, key, old, exc)

    def after(specs: Specs) -> Specs:
        return [replace(s, params={**s.params, key: to_jsonable(new)}) if s.name == inst.name
                else s for s in specs]

    result = {"name": name, "key": key, "value": to_jsonable(new)}
    return Staged(lambda: result, abort, after)


_OPS: dict[str, Callable[[Host, Mapping[str, Any]], Staged]] = {
    "upgrade": _upgrade_op, "insmod": _insmod_op, "modprobe": _modprobe_op,
    "rmmod": _rmmod_op, "param": _param_op,
}
OPS = tuple(_OPS)


def stage(host: Host, op: str, args: Mapping[str, Any]) -> Staged:
    """Prepare ``op`` in ``host``. Caller holds ``host._life.op_lock`` until commit or abort.

    Raises:
        The operation's error (a "no" vote); NotSupported for an unknown op.
    """
    if op not in _OPS:
        raise NotSupported(f"{op!r} is not a service-wide operation (those are: "
                           f"{', '.join(OPS)})")
    host._table.owner.check()
    host._life.check_open()
    return _OPS[op](host, args)
