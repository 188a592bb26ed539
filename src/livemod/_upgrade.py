"""Hot upgrade: ``host.replace(name, path)``.

**The race it guards against.** Calls keep arriving on v1's hooks, threads keep running
v1's code and holders keep v1's objects while the upgrade runs. A call must find either v1
or v2 on a hook -- never both, never neither -- and nothing may be lost if v2 turns out to
be broken. So the steps are in this order:

0. *The files are read before the operation lock* (as ``insmod`` reads them): what reading
   and parsing cost is the files' to decide, and other module operations should not queue
   behind it. Each source is read for the instance LIVE under its name at that moment;
   under the lock, a source whose instance is no longer the LIVE one (another operation
   upgraded or reloaded it in between) is read again there, so an upgrade never installs
   files read for a version that has since been replaced -- that rare case costs what
   every upgrade cost before. A file edited after it was read is not looked at again: the
   bytes read are the version installed, as for ``insmod``.
1. *Everything that can fail comes before anything changes*: check v2 (name,
   downgrade, the version its users require, dependents bound to v1's objects), then bring
   up every new version -- v2, and with ``cascade`` each module that imported v1's objects
   directly, against the incoming versions (``table.incoming``) -- to COMING, staged.
   Each one brought up pushes its discard onto an ``ExitStack``; a failure unwinds them
   all and v1 (and its dependents) never noticed: the ``LivemodError`` of the failure is
   raised and they keep serving.
2. *Handover after v2's body, before its init*: a v2 that does not even load never takes
   v1's state, and v2's init may still refuse it. So ``handover`` must give state, not tear
   v1 down: v1 may well keep running.
3. *The switch is one hold of the lock*: on every hook v1's implementations are replaced by
   v2's in the same places (one snapshot swap per hook), v2's exports are published, the
   name moves to v2 (``require`` views and new holds resolve to it), v1 goes GOING and v2
   LIVE. Subscribers are told after the lock is released (they are user code).
4. *Drain dependents first, then v1*: calls already inside v1 finish on v1, and old
   dependents hold v1's objects until they are gone. Each then goes exit -> GONE with its
   leak check, exactly as for ``rmmod``.
5. *If v1 cannot drain within the timeout* (a hold, a pin, a long call), v2 keeps serving
   and v1 stays listed as GOING, "removal pending"; a reaper thread finishes it when its
   last user is gone. Rolling v2 back at that point would be the worse choice: v2 has
   served calls already.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Protocol

from ._deps import dependents_order
from ._hooktable import HookTable
from ._instance import Instance, Module, frozen_mapping
from ._journal import Journal, Notice
from ._metadata import ModuleInfo
from ._params import resolve
from ._quiesce import current_thread_in
from ._records import brief
from ._settings import Settings
from ._source import ModuleSource
from ._starting import start_soon
from ._state import State
from ._switching import quick_switching
from ._table import ModuleTable
from ._teardown import Teardown
from ._version import parse_version
from .errors import DependencyError, InitError, LivemodError, ModuleExists, UpgradeError


class Steps(Protocol):
    """What an upgrade needs of the lifecycle (``_lifecycle.Lifecycle`` is one); a
    protocol, so that the lifecycle may call this module without an import circle."""

    table: ModuleTable
    hooks: HookTable
    journal: Journal
    settings: Settings
    teardown: Teardown

    def read(self, path: str | os.PathLike[str]) -> ModuleSource: ...
    def verify(self, source: ModuleSource) -> str | None: ...
    def new_instance_unlocked(self, info: ModuleInfo,
                              values: Mapping[str, object]) -> Instance: ...
    def bring_up(self, inst: Instance, source: ModuleSource,
                 handover: Callable[[], object] | None = ...) -> None: ...
    def taint_if_untrusted(self, inst: Instance) -> None: ...
    def wait_quiet(self, inst: Instance, deadline: float, *, holds: bool) -> list[str]: ...
    def check_open(self) -> None: ...
    @property
    def op_lock(self) -> threading.RLock: ...

__all__ = ["ReadAhead", "abort", "commit", "read_ahead", "replace", "stage"]

_log = logging.getLogger("livemod")


def replace(
    host: Steps,
    name: str,
    path: str | os.PathLike[str] | None,
    *,
    timeout: float | None,
    cascade: bool,
    downgrade: bool,
    params: Mapping[str, object],
) -> Module:
    """See ``Host.replace``: the files are read first, then the rest runs under
    ``host.op_lock`` (step 0 of the module docstring)."""
    host.check_open()
    try:
        # Quick switching from the start: under load, each GIL hand-off of the read (every
        # file system call is one) costs several default intervals (see _switching).
        with quick_switching():
            ahead = read_ahead(host, name, path, cascade=cascade)
            with host.op_lock:
                host.check_open()
                brought = stage(host, name, path, cascade=cascade, downgrade=downgrade,
                                params=params, ahead=ahead)
                return commit(host, brought, timeout=timeout)
    except InitError:
        raise  # the failed load of the new version is in the log already
    except LivemodError as exc:
        host.journal.event("upgrade-refused", name, f"upgrade refused: {exc}")
        raise


#: Sources read before the lock, by module name: (the instance each was read for, the path
#: read, what it gave).
ReadAhead = dict[str, tuple[Instance, str, ModuleSource]]


def read_ahead(host: Steps, name: str, path: str | os.PathLike[str] | None, *,
               cascade: bool) -> ReadAhead:
    """Read the files ``stage`` will need, without the operation lock: the new version,
    and with ``cascade`` every module that will be reloaded with it (their own files).

    A module that is not LIVE now (not loaded, or another operation is loading or
    unloading it) is left to ``stage``, which decides under the lock, as it always did:
    an rmmod that is rolled back leaves it LIVE to upgrade."""
    ahead: ReadAhead = {}
    old = host.table.find(name)
    if old is None or old.state is not State.LIVE:
        return ahead
    first = os.fspath(path if path is not None else old.info.path)
    ahead[old.name] = (old, first, host.read(first))
    for dependent in _bound_closure(host, old.name) if cascade else ():
        inst = host.table.find(dependent)
        if inst is not None and inst.state is State.LIVE:
            ahead[inst.name] = (inst, inst.info.path, host.read(inst.info.path))
    return ahead


def _source(host: Steps, ahead: ReadAhead | None, inst: Instance,
            path: str | os.PathLike[str]) -> ModuleSource:
    """What was read ahead for ``inst`` from ``path``; read again (under the lock) if
    ``inst`` is no longer the instance it was read for, or nothing was read ahead."""
    got = ahead.get(inst.name) if ahead is not None else None
    if got is not None and got[0] is inst and got[1] == os.fspath(path):
        return got[2]
    return host.read(path)


Brought = list[tuple[Instance, Instance]]


def stage(
    host: Steps,
    name: str,
    path: str | os.PathLike[str] | None,
    *,
    cascade: bool,
    downgrade: bool,
    params: Mapping[str, object],
    ahead: ReadAhead | None = None,
) -> Brought:
    """The fallible half of an upgrade: every new version loaded and initialised beside
    the old one, handover taken, nothing switched. Returns the (old, new) pairs for
    ``commit`` or ``abort``; the caller holds ``host.op_lock`` until one of them ran (a
    service-wide upgrade prepares with this and commits when every worker agreed).
    ``ahead``: the files as ``read_ahead`` read them before the lock (else read here)."""
    old = host.table.get_live(name)
    source = _source(host, ahead, old, path if path is not None else old.info.path)
    info = source.info
    _check_upgrade(host, old, info, cascade=cascade, downgrade=downgrade)
    # Every version is brought up before anything switches: the module, then each module
    # that imported its objects (and theirs), against the incoming versions.
    steps = [(old, source, params)]
    for dependent in _bound_closure(host, old.name):
        inst = host.table.get_live(dependent)
        steps.append((inst, _source(host, ahead, inst, inst.info.path), {}))
    brought: list[tuple[Instance, Instance]] = []
    try:
        with contextlib.ExitStack() as rollback:
            for current, new_source, overrides in steps:
                new = _prepare(host, current, new_source.info, overrides)
                new.untrusted = host.verify(new_source)  # SignatureError: nothing switched
                host.bring_up(new, new_source,  # InitError: nothing switched
                              handover=functools.partial(_handover, host, current))
                rollback.callback(host.teardown.discard, new)
                with host.table.lock:
                    host.table.incoming[current.name] = new
                brought.append((current, new))
            rollback.pop_all()
    finally:
        with host.table.lock:
            host.table.incoming.clear()
    return brought


def abort(host: Steps, brought: Brought) -> None:
    """Discard staged new versions: the old ones never stopped serving."""
    for _, new in reversed(brought):
        host.teardown.discard(new)


def commit(host: Steps, brought: Brought, *, timeout: float | None) -> Module:
    """The switch (which cannot fail), then the old versions drain and go, while the new
    versions' managed threads start (``_starting``); all have started when it returns."""
    starting = start_soon(_switch(host, brought))
    try:
        _retire(host, brought, host.settings.timeout if timeout is None else timeout)
    finally:
        starting.wait()
    return Module(brought[0][1])


def _retire(host: Steps, brought: Brought, limit: float) -> None:
    # Dependents first: the old dependents hold the old module's objects until they go.
    for current, new in reversed(brought):
        try:
            pending = _drain(host, current, limit)
        except BaseException as exc:  # v2 serves: v1 cannot be LIVE again, so it goes
            host.teardown.failed(current, "waiting for the old version to drain", exc)
            host.teardown.finish(current)
            raise
        if pending:
            host.journal.event("upgrade-pending", current.name,
                               f"{current.info.version} removal pending: "
                               f"{'; '.join(pending)}", version=current.info.version)
            _log.warning("module %r: upgraded to %s, but %s is still in use (%s); it will be "
                         "removed when that ends", current.name, new.info.version,
                         current.info.version, "; ".join(pending))
            _reap_later(host, current)
        else:
            host.teardown.finish(current)


def _prepare(
    host: Steps, old: Instance, info: ModuleInfo, overrides: Mapping[str, object]
) -> Instance:
    values = {k: v for k, v in old.params.as_dict().items() if k in info.params}
    values.update(overrides)
    resolved = resolve(info.params, values, module=info.name)
    with host.table.lock:
        for word in info.aliases:
            other = host.table.resolve_unlocked(word)
            if other is not None and other is not old:
                raise ModuleExists(
                    f"cannot upgrade {old.name!r}: its new alias {word!r} is taken by module "
                    f"{other.name!r}", module=old.name,
                )
        return host.new_instance_unlocked(info, resolved)


def _check_upgrade(
    host: Steps, old: Instance, info: ModuleInfo, *, cascade: bool, downgrade: bool
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
    with host.table.lock:
        users = [i for i in host.table.names.values() if i is not old]
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


def _bound_dependents(host: Steps, name: str) -> list[str]:
    """Modules that imported ``name``'s objects directly, dependents last (reload order)."""
    with host.table.lock:
        bound = [i.name for i in host.table.names.values() if name in i.bound]
        if not bound:  # the common case: nothing to order
            return []
        used_by = host.table.used_by_map_unlocked()
    return list(reversed(dependents_order(bound, used_by)))


def _bound_closure(host: Steps, name: str) -> list[str]:
    """Every module that must be reloaded with ``name``: those that imported its objects,
    and those that imported theirs, dependencies first."""
    order: list[str] = []
    frontier = [name]
    while frontier:
        for dependent in _bound_dependents(host, frontier.pop(0)):
            if dependent not in order:
                order.append(dependent)
                frontier.append(dependent)
    if not order:
        return []
    with host.table.lock:
        used_by = host.table.used_by_map_unlocked()
    return list(reversed(dependents_order(order, used_by)))


def _handover(host: Steps, old: Instance) -> object:
    fn = getattr(old.module, "handover", None)
    if fn is None or old.context is None:
        return None
    try:
        return host.teardown.complete(fn(old.context), f"handover of {old.name!r}")
    except (Exception, SystemExit) as exc:
        raise InitError(
            f"cannot upgrade {old.name!r}: its handover() raised {brief(exc)}; "
            f"{old.info.version} keeps running, untouched", module=old.name,
        ) from exc


def _switch(host: Steps, pairs: list[tuple[Instance, Instance]]) -> list[Callable[[], None]]:
    """The one atomic step (per hook): old versions unpublished, new ones published, the
    names moved -- all under one hold of the host lock. Returns the new versions' staged
    starts (threads, tasks, timers), for the caller to run."""
    starts: list[Callable[[], None]] = []
    notices: list[Notice] = []
    with host.table.lock:
        for old, new in pairs:
            host.hooks.switch_unlocked(old.id, new.staged)
            new.exports = frozen_mapping(new.staged_exports)
            starts += new.staged_done()
            new.init_ok = True
            notices += [host.journal.move_unlocked(old, State.GOING),
                        host.journal.move_unlocked(new, State.LIVE)]
            host.table.put_unlocked(new)
            host.table.pending.append(old)
            new.replaced = [old]
            old.replaced = ()  # only the newest knows its predecessor: no chain of records
    host.hooks.run_replays()
    for notice in notices:
        host.journal.notify(notice)
    for _, new in pairs:
        host.taint_if_untrusted(new)
    for old, new in pairs:
        host.journal.event("upgrade", new.name, f"upgraded {old.info.version} -> "
                           f"{new.info.version} from {new.info.path}", old=old.info.version,
                           version=new.info.version, path=new.info.path,
                           params=new.params.as_dict())
    return starts


def _drain(host: Steps, old: Instance, timeout: float) -> list[str]:
    where = current_thread_in(old.namespace_ids, old.id)
    if where is not None:  # replace called from v1's own code: it cannot wait for itself
        return [f"the calling thread, at {where}"]
    return host.wait_quiet(old, time.monotonic() + timeout, holds=True)


def _reap_later(host: Steps, old: Instance) -> None:
    def reap() -> None:
        try:
            while old.state is State.GOING and host.wait_quiet(old, time.monotonic() + 60,
                                                                holds=True):
                pass
        except Exception as exc:  # never leave it GOING for good: remove it, tainted
            host.teardown.failed(old, "waiting for the old version to drain", exc)
        with host.op_lock:
            if old.state is State.GOING:
                host.teardown.finish(old)

    threading.Thread(target=reap, name=f"livemod-reap-{old.name}", daemon=True).start()
