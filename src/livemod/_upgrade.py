"""Hot upgrade: ``host.replace(name, path)``.

v2 is loaded and initialised beside v1 (its registrations staged), handed v1's state, and
then switched in under the host lock: on every hook v1's implementations are replaced by
v2's in the same places (one swap per hook, so no call on a hook sees both versions or
neither), v2's exports are published, and the name now means v2 -- ``require`` views and new
holds resolve to it. Calls already inside v1 finish on v1; v1 then drains and goes GOING ->
exit -> GONE with its leak check, exactly as for ``rmmod``. Anything that fails before the
switch (parse, manifest, dependencies, handover, body, init) leaves v1 untouched, serving.

If v1 cannot drain within the timeout (a hold, a pin, a long call), v2 keeps serving and v1
stays listed as GOING, "removal pending"; a reaper thread finishes it when its last user is
gone. Dependents that imported v1's objects directly (``from livemod.mods.x import f``) would
keep calling v1; they are reloaded too with ``cascade=True`` (in dependency order, each with
its own handover), otherwise the upgrade is refused before anything changes.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from ._deps import dependents_order
from ._instance import Instance, Module, frozen_mapping
from ._journal import Notice
from ._metadata import ModuleInfo
from ._params import resolve
from ._quiesce import current_thread_in
from ._records import brief
from ._state import State
from ._version import parse_version
from .errors import DependencyError, InitError, ModuleExists, UpgradeError

if TYPE_CHECKING:
    from .host import Host

__all__ = ["replace"]

_log = logging.getLogger("livemod")


def replace(
    host: Host,
    name: str,
    path: str | os.PathLike[str] | None,
    *,
    timeout: float | None,
    cascade: bool,
    downgrade: bool,
    params: Mapping[str, object],
) -> Module:
    """See ``Host.replace``. Caller holds ``host._op_lock``."""
    old = host._table.get_live(name)
    source = host._read(path if path is not None else old.info.path)
    info = source.info
    _check_upgrade(host, old, info, cascade=cascade, downgrade=downgrade)
    # Every version is brought up before anything switches: the module, then each module
    # that imported its objects (and theirs), against the incoming versions.
    steps = [(old, source, params)]
    for dependent in _bound_closure(host, old.name):
        inst = host._table.get_live(dependent)
        steps.append((inst, host._read(inst.info.path), {}))
    brought: list[tuple[Instance, Instance]] = []
    try:
        for current, new_source, overrides in steps:
            new = _prepare(host, current, new_source.info, overrides)
            new.untrusted = host._verify(new_source)  # SignatureError: nothing switched
            host._bring_up(new, new_source,  # InitError: nothing switched
                           handover=functools.partial(_handover, host, current))
            host._table.incoming[current.name] = new
            brought.append((current, new))
    except BaseException:
        for _, new in reversed(brought):
            host._discard(new)
        raise
    finally:
        host._table.incoming.clear()
    _switch(host, brought)
    limit = host.timeout if timeout is None else timeout
    # Dependents first: the old dependents hold the old module's objects until they go.
    for current, new in reversed(brought):
        pending = _drain(host, current, limit)
        if pending:
            host._event("upgrade-pending", current.name,
                        f"{current.info.version} removal pending: {'; '.join(pending)}",
                        version=current.info.version)
            _log.warning("module %r: upgraded to %s, but %s is still in use (%s); it will be "
                         "removed when that ends", current.name, new.info.version,
                         current.info.version, "; ".join(pending))
            _reap_later(host, current)
        else:
            host._finish(current)
    return Module(brought[0][1])


def _prepare(
    host: Host, old: Instance, info: ModuleInfo, overrides: Mapping[str, object]
) -> Instance:
    values = {k: v for k, v in old.params.as_dict().items() if k in info.params}
    values.update(overrides)
    resolved = resolve(info.params, values, module=info.name)
    with host._lock:
        for word in info.aliases:
            other = host._table.resolve_unlocked(word)
            if other is not None and other is not old:
                raise ModuleExists(
                    f"cannot upgrade {old.name!r}: its new alias {word!r} is taken by module "
                    f"{other.name!r}", module=old.name,
                )
        return host._new_instance_unlocked(info, resolved)


def _check_upgrade(
    host: Host, old: Instance, info: ModuleInfo, *, cascade: bool, downgrade: bool
) -> None:
    if info.name != old.name:
        raise UpgradeError(
            f"cannot upgrade {old.name!r} with {info.path}: it declares the name "
            f"{info.name!r} (replace needs the same module name)", module=old.name,
        )
    try:
        older = parse_version(info.version) < parse_version(old.info.version)
    except ValueError:
        older = False
    if older and not downgrade:
        raise UpgradeError(
            f"cannot upgrade {old.name!r} from {old.info.version} to {info.version}: that is "
            f"a downgrade (pass downgrade=True / --downgrade if you mean it)", module=old.name,
        )
    with host._lock:
        users = [i for i in host._table.names.values() if i is not old]
    for user in users:
        for req in user.info.depends:
            if req.name == old.name and not req.satisfied_by(info.version):
                raise DependencyError(
                    f"cannot upgrade {old.name!r} to {info.version}: {user.name!r} "
                    f"{user.info.version} needs {req} (upgrade or remove {user.name} first)",
                    module=old.name, chain=(user.name, old.name),
                )
    bound = _bound_dependents(host, old.name)
    if bound and not cascade:
        raise UpgradeError(
            f"cannot upgrade {old.name!r}: {', '.join(map(repr, bound))} imported its objects "
            f"directly (from livemod.mods.{old.name} import ...) and would keep calling the old "
            f"version; use cascade=True to reload them too, or have them use mod.require()",
            module=old.name,
        )


def _bound_dependents(host: Host, name: str) -> list[str]:
    """Modules that imported ``name``'s objects directly, dependents last (reload order)."""
    with host._lock:
        bound = [i.name for i in host._table.names.values() if name in i.bound]
        used_by = {n: host._table.used_by_unlocked(i) for n, i in host._table.names.items()}
    return list(reversed(dependents_order(bound, used_by)))


def _bound_closure(host: Host, name: str) -> list[str]:
    """Every module that must be reloaded with ``name``: those that imported its objects,
    and those that imported theirs, dependencies first."""
    order: list[str] = []
    frontier = [name]
    while frontier:
        for dependent in _bound_dependents(host, frontier.pop(0)):
            if dependent not in order:
                order.append(dependent)
                frontier.append(dependent)
    with host._lock:
        used_by = {n: host._table.used_by_unlocked(i) for n, i in host._table.names.items()}
    return list(reversed(dependents_order(order, used_by)))


def _handover(host: Host, old: Instance) -> object:
    fn = getattr(old.module, "handover", None)
    if fn is None or old.context is None:
        return None
    try:
        return host._complete(fn(old.context), f"handover of {old.name!r}")
    except (Exception, SystemExit) as exc:
        raise InitError(
            f"cannot upgrade {old.name!r}: its handover() raised {brief(exc)}; "
            f"{old.info.version} keeps running, untouched", module=old.name,
        ) from exc


def _switch(host: Host, pairs: list[tuple[Instance, Instance]]) -> None:
    """The one atomic step (per hook): old versions unpublished, new ones published, the
    names moved -- all under one hold of the host lock."""
    starts = []
    notices: list[Notice] = []
    with host._lock:
        for old, new in pairs:
            host._hooks.switch_unlocked(old.id, new.staged)
            new.exports = frozen_mapping(new.staged_exports)
            new.staged, new.staged_exports = [], {}
            starts += new.staged_starts
            new.staged_starts = []
            new.init_ok = True
            notices += [host._journal.move_unlocked(old, State.GOING),
                        host._journal.move_unlocked(new, State.LIVE)]
            host._table.put_unlocked(new)
            host._table.pending.append(old)
            new.replaced = [old]
            old.replaced = []  # only the newest knows its predecessor: no chain of records
    for notice in notices:
        host._journal.notify(notice)
    for _, new in pairs:
        host._taint_if_untrusted(new)
    for start in starts:
        start()
    for old, new in pairs:
        host._event("upgrade", new.name, f"upgraded {old.info.version} -> {new.info.version} "
                    f"from {new.info.path}", old=old.info.version, version=new.info.version,
                    path=new.info.path, params=new.params.as_dict())


def _drain(host: Host, old: Instance, timeout: float) -> list[str]:
    where = current_thread_in(old.namespace_ids)
    if where is not None:  # replace called from v1's own code: it cannot wait for itself
        return [f"the calling thread, at {where}"]
    return host._wait_quiet(old, time.monotonic() + timeout, holds=True)


def _reap_later(host: Host, old: Instance) -> None:
    def reap() -> None:
        while old.state is State.GOING and host._wait_quiet(old, time.monotonic() + 60,
                                                            holds=True):
            pass
        with host._op_lock:
            if old.state is State.GOING:
                host._finish(old)

    threading.Thread(target=reap, name=f"livemod-reap-{old.name}", daemon=True).start()
