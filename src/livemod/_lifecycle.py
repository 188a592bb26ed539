"""The lifecycle of a host's modules: load, unload, replace, the modprobe chain and close.

Every operation runs under ``op_lock`` (an RLock), held while a module's body, ``init`` and
``exit`` run: operations are serialised, and it is reentrant so that an ``init`` may
``modprobe`` another module (a nested, complete operation). The table's lock is only ever
taken for short, lock-free-of-user-code steps.

**Load** (LOADING -> COMING -> LIVE) follows the kernel's ``load_module`` order: the cheap
checks that change nothing come first (read the files once -- manifest, code and signature
from the same bytes -- then params, signature, name and dependencies), and only then is the
instance put in the table. The body runs in a private namespace, ``init`` with every
registration staged, and one publish makes it all visible. A failure anywhere is one
teardown (``_teardown``), and since nothing was published, it can never be "busy".

**Unload -- the race it guards against.** A call may be in flight inside the module, a
thread may be running its code, or a user may hold it, at the moment ``rmmod`` is asked.
So unload is a two-stage delete, and the order of its steps is what makes it safe:

1. *Refuse before changing anything*: from inside the module's own code (it would wait for
   itself), or, without ``wait``/``force``, while it is held.
2. *Unpublish and go GOING in one hold of the lock*: from that instant no new call can enter
   (the hooks' snapshots no longer include it) and no new hold is granted (``hold`` checks
   the state under the same lock). Doing the two apart would leave a window in which a
   hold is granted on a module whose hooks are already gone, or the reverse.
3. *Wait for quiescence* (``_drain``): every dispatch that read a snapshot including the
   module has left it, no thread or task runs its code, and (with ``wait``) no hold or pin
   is left. Only after step 2 can this wait end, because only then does nothing new start.
4. *On timeout, roll back*: republish the very implementations removed in step 2 and go
   LIVE again, in one hold of the lock, and no author code runs (design.md, question 5).
   A hold may have been taken while we waited for calls in flight (before step 2 it was
   legal), so without ``wait`` the holds are checked again first.
5. *Otherwise tear down* (exit, managed undo, GONE, leak check), in ``_teardown``'s order.

Host-level rollback (a modprobe chain) is structured: each module brought up pushes its
unload onto an ``ExitStack``, and success pops them all.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Mapping

from . import _deps, _loader, _params, _quiesce, _sysmodules, _upgrade, _wire
from ._aio import LoopBridge
from ._context import ModuleContext
from ._drain import Progress, wait_quiet
from ._hooks import Impl
from ._hooktable import HookTable
from ._instance import Instance, Module, frozen_mapping
from ._journal import Journal
from ._metadata import ModuleInfo
from ._modpath import ModPath
from ._names import canonical
from ._records import brief, where_raised
from ._registrar import Registrar
from ._settings import Settings
from ._signing import Verifier
from ._source import ModuleSource, read_module
from ._state import State
from ._switching import quick_switching
from ._table import ModuleTable
from ._teardown import Teardown
from .config import Config
from .errors import (
    InitError,
    LivemodError,
    ManifestError,
    ModuleBusy,
    ModuleExists,
    ModuleGoing,
    SignatureError,
)

__all__ = ["Lifecycle"]


class Lifecycle:
    """Load, unload, replace and close for one host; ``Host`` delegates to it."""

    def __init__(
        self,
        table: ModuleTable,
        hooks: HookTable,
        journal: Journal,
        bridge: LoopBridge,
        verifier: Verifier,
        settings: Settings,
        registrar: Registrar,
        modpath: ModPath,
    ) -> None:
        self.op_lock = threading.RLock()
        self._param_lock = threading.Lock()  # one parameter change (and its callbacks) at once
        self.table = table
        self.hooks = hooks
        self.journal = journal
        self.bridge = bridge
        self.verifier = verifier
        self.settings = settings
        self.registrar = registrar
        self.modpath = modpath
        self.teardown = Teardown(table, journal, bridge, settings)
        self.closed = False

    def check_open(self) -> None:
        if self.closed:
            raise LivemodError("this host is closed; create a new Host to load modules")

    # ------------------------------------------------------------------------ load

    def load(self, path: str | os.PathLike[str], params: Mapping[str, object],
             source: ModuleSource | None = None) -> Module:
        """LOADING -> COMING -> LIVE, or roll back completely. Caller holds ``op_lock``.
        ``source``: the module already read (outside the lock, by ``insmod``)."""
        inst = self.stage_load(path, params, source)
        self._publish(inst)
        return Module(inst)

    def stage_load(self, path: str | os.PathLike[str], params: Mapping[str, object],
                   source: ModuleSource | None = None) -> Instance:
        """``load`` up to its publish: COMING, every registration staged; ``_publish`` or
        ``teardown.discard`` ends it (a service-wide insmod publishes once all agreed)."""
        source = self.read(path) if source is None else source
        info = source.info
        values = _params.resolve(info.params, params, module=info.name)
        untrusted = self.verify(source)  # SignatureError here: nothing has changed yet
        with self.table.lock:
            self.table.check_free_unlocked(info)
            inst = self.new_instance_unlocked(info, values)
            self.table.put_unlocked(inst)
        inst.untrusted = untrusted
        self.bring_up(inst, source)
        return inst

    def read(self, path: str | os.PathLike[str]) -> ModuleSource:
        """Read a module once; under ``enforce``, refuse paths outside the modpath."""
        try:
            source = read_module(path, signature=self.verifier.policy != "off",
                                 precheck=self.verifier.precheck, lazy=True)
        except ManifestError as exc:  # a syntax error, a broken manifest: in the log too
            self.journal.event("load-failed", exc.module or os.path.basename(os.fspath(path)),
                               f"load refused: {exc}")
            raise
        if self.verifier.policy == "enforce" and not self.settings.allow_outside_modpath:
            where = source.info.path
            if not any(where.startswith(folder + os.sep) for folder in self.settings.modpath):
                raise SignatureError(
                    f"refusing {where}: it is outside the modpath, and signatures are "
                    f"enforced (put it in a modpath folder, or allow_outside_modpath=True)",
                    module=source.info.name,
                )
        return source

    def verify(self, source: ModuleSource) -> str | None:
        """Check the signature before any of the module's code runs (SignatureError under
        enforce); under warn, return why it will taint the host."""
        return self.verifier.check(source.info.name, source.files, source.signature)

    def taint_if_untrusted(self, inst: Instance) -> None:
        if inst.untrusted is not None:
            self.journal.taint("unsigned-module", inst.name, inst.untrusted)

    def new_instance_unlocked(self, info: ModuleInfo, values: Mapping[str, object]) -> Instance:
        deps = self.table.check_depends_unlocked(info)
        inst = Instance(info, _params.Params(info.params, values, module=info.name))
        inst.private_name = self.table.private_name_unlocked(info.name)
        if deps:
            inst.own_set("uses").update(deps)
        self.table.by_private[inst.private_name] = inst
        return inst

    def bring_up(self, inst: Instance, source: ModuleSource,
                 handover: Callable[[], object] | None = None) -> None:
        """Run the body (LOADING) and init (COMING); on failure discard it and raise.

        ``handover`` (an upgrade) is asked for the old version's state after the body ran
        and before init, so a new version that does not even load never takes it.
        """
        info = inst.info
        self.journal.notify((inst, None, State.LOADING))  # it was born LOADING
        try:
            module = _loader.exec_module(
                inst.private_name, source.code, source_file=info.source_file,
                package_dir=info.path if info.is_package else None,
                builtins=_wire.wire(self.table, self.registrar, self.journal, inst),
                files=source.by_path,
            )
            inst.module = module
            inst.namespace_ids = _sysmodules.register_namespaces(  # unwire drops them
                _loader.namespaces_of(inst.private_name))
            inst.files = frozenset(p for p in source.by_path if p.endswith(".py"))
            self.journal.transition(inst, State.COMING, veto=True)
            inst.context = context = ModuleContext(self.registrar, inst)
            context.handover_state = handover() if handover is not None else None
            init = getattr(module, "init", None)
            if init is not None:
                self.teardown.complete(init(context), f"init of {info.name!r}")
        except (KeyboardInterrupt, InitError):
            # An operator's Ctrl-C, or a handover that failed (already an InitError saying
            # so): roll back completely and let it propagate as it is.
            self.teardown.discard(inst)
            raise
        except BaseException as exc:
            # Exception, sys.exit(), and any other BaseException a module raises: a failed
            # load, never a reason for the host to exit.
            where = where_raised(exc, info)
            self.teardown.discard(inst)
            self.journal.event("load-failed", inst.name, f"load failed at {where}: {brief(exc)}")
            raise InitError(
                f"module {info.name!r} failed to load at {where}: {brief(exc)} "
                f"(nothing it registered was published; fix it and load it again)",
                module=info.name,
            ) from exc
        _wire.settle(inst)
        self.teardown.check_intact(inst.name)

    def _publish(self, inst: Instance) -> None:
        with self.table.lock:
            self.hooks.publish_unlocked(inst.staged)
            inst.exports = frozen_mapping(inst.staged_exports)
            starts = inst.staged_done()
            inst.init_ok = True
            notice = self.journal.move_unlocked(inst, State.LIVE)
        self.hooks.run_replays()
        self.journal.notify(notice)
        self.taint_if_untrusted(inst)
        for start in starts:
            start()
        self.journal.event("load", inst.name, f"loaded {inst.info.version} from "
                           f"{inst.info.path}", version=inst.info.version, path=inst.info.path,
                           params=inst.params.as_dict())

    # -------------------------------------------------------------------- modprobe

    def modprobe(self, name: str, params: Mapping[str, object], config: Config | None) -> Module:
        """``Host.modprobe``: with a config, its aliases, options and soft dependencies."""
        if config is None:
            return self._modprobe(name, params)
        plan = config.modprobe_plan(name, params)
        loaded = self.table.find(plan.name)
        found = loaded.info if loaded is not None else self.modpath.find(plan.name)
        if found is not None and found.name != plan.name:
            # An alias from the module's own manifest: the config speaks of real names.
            plan = config.modprobe_plan(found.name, params)
        with self.op_lock:
            for soft in plan.pre:
                self._modprobe_soft(soft, plan.name, "pre", config)
            module = self._modprobe(plan.name, plan.params)
            for soft in plan.post:
                self._modprobe_soft(soft, plan.name, "post", config)
            return module

    def plan(self, name: str, include_loaded: bool, config: Config | None) -> list[ModuleInfo]:
        """``Host.modprobe_plan``: the modprobe chain, resolved and checked, not loaded."""
        name = canonical(name)  # a look-alike of a blacklisted name is that name
        if config is not None:
            name = config.modprobe_plan(name).name
        versions = {} if include_loaded else self.table.versions()
        return _deps.resolve_load_order(name, self.modpath.find, versions)

    def _modprobe_soft(self, soft: str, owner: str, when: str, config: Config) -> None:
        try:
            self.modprobe(soft, {}, config)
        except LivemodError as exc:
            self.journal.event("load-failed", soft, f"soft dependency ({when}) of {owner!r} "
                               f"not loaded: {exc}")

    def _modprobe(self, name: str, params: Mapping[str, object]) -> Module:
        with self.op_lock:
            self.check_open()
            loaded = self.table.find(name)
            if loaded is not None:
                if params:
                    raise ModuleExists(
                        f"module {loaded.name!r} is already loaded; rmmod it first to load it "
                        f"with other parameters", module=loaded.name,
                    )
                return Module(loaded)
            order = _deps.resolve_load_order(name, self.modpath.find, self.table.versions())
            with contextlib.ExitStack() as rollback:
                for info in order:
                    root = info is order[-1]
                    module = self.load(info.path, params if root else {})
                    module._inst.auto = not root
                    rollback.callback(self._unload_brought_up, module.name)
                rollback.pop_all()
            return module

    def _unload_brought_up(self, name: str) -> None:
        self.unload(self.table.names[name], wait=False, timeout=self.settings.timeout,
                    force=False)

    def remove(self, name: str, *, wait: bool, timeout: float | None) -> list[str]:
        """``modprobe -r`` (see ``Host.modprobe_remove``)."""
        with self.op_lock:
            inst = self.table.get_live(name)
            removed = [inst.name]
            candidates = sorted(inst.uses)
            self.rmmod(inst.name, wait=wait, timeout=timeout)
            while candidates:
                dep = self.table.find(candidates.pop(0))
                if dep is None or not dep.auto or self.table.used_by(dep):
                    continue
                try:
                    self.rmmod(dep.name, wait=wait, timeout=timeout)
                except (ModuleBusy, ModuleGoing) as exc:
                    self.journal.event("unload-refused", dep.name, f"modprobe -r left it: {exc}")
                    continue
                removed.append(dep.name)
                candidates.extend(sorted(dep.uses))
            return removed

    # ---------------------------------------------------------------------- unload

    def rmmod(self, name: str, *, wait: bool = False, timeout: float | None = None,
              force: bool = False, cascade: bool = False,
              progress: Progress | None = None) -> None:
        """``Host.rmmod``: the module, and with ``cascade`` its dependents first."""
        with self.op_lock, quick_switching():
            limit = self.settings.timeout if timeout is None else timeout
            going = self.table.find(name)
            if going is not None and going.state is State.GOING:
                # No operation runs on it (we hold the operation lock): an unload or an
                # upgrade stopped half way. Finish the job instead of refusing forever.
                self._finish_going(going, wait=wait, timeout=limit, force=force,
                                   progress=progress)
                return
            inst = self.table.get_live(name)
            users = self.table.used_by(inst)
            if users and not cascade:
                holders = tuple(f"module {u!r}" for u in users)
                raise ModuleBusy(
                    f"cannot remove {inst.name!r}: used by {', '.join(map(repr, users))} "
                    f"(rmmod {users[0]} first, or use cascade=True)",
                    module=inst.name, holders=holders,
                )
            if users:
                closure = self.table.dependents_closure(inst.name)
                if not (wait or force):  # refuse before removing anything, the module too
                    for dep in (*closure, inst.name):
                        self.table.refuse_if_held(self.table.names[dep])
                for dep in closure:
                    self.unload(self.table.names[dep], wait=wait, timeout=limit, force=force,
                                progress=progress)
            self.unload(inst, wait=wait, timeout=limit, force=force, progress=progress)

    def unload(self, inst: Instance, *, wait: bool, timeout: float, force: bool,
               progress: Progress | None = None) -> None:
        """LIVE -> GOING -> (exit, undo) -> GONE, or back to LIVE (see the module docstring
        for the order). Caller holds ``op_lock``."""
        removed = self.take_down(inst, wait=wait, timeout=timeout, force=force,
                                 progress=progress)
        removed.clear()  # the leak check must not find the implementations here
        self.teardown.finish(inst)

    def take_down(self, inst: Instance, *, wait: bool, timeout: float, force: bool,
                  progress: Progress | None = None) -> list[tuple[str, Impl]]:
        """Steps 1-4 of an unload: GOING and quiet, or LIVE again and ModuleBusy. Returns
        what ``_republish`` would put back; ``teardown.finish`` is the rest (which a
        service-wide rmmod runs once every worker agreed)."""
        inside = _quiesce.current_thread_in(inst.namespace_ids, inst.id)
        if inside is not None or threading.get_ident() in inst.own_thread_idents():
            raise ModuleBusy(
                f"cannot remove {inst.name!r} from inside its own code "
                f"({inside or 'its own thread'}): the unload would wait for itself "
                f"(call rmmod from another thread)",
                module=inst.name, holders=(f"the calling thread, at {inside}",),
            )
        with self.table.lock:
            if not (wait or force):
                self.table.refuse_if_held_unlocked(inst)
            notice = self.journal.move_unlocked(inst, State.GOING)
            removed = self.hooks.unpublish_unlocked(inst.id)
        # GOING is never a dead end: until exit begins, any failure (ours, an interrupt)
        # republishes the module, LIVE again; from exit on, teardown ends GONE regardless.
        try:
            self.journal.notify(notice)
            pending: list[str] = []
            if force:
                self.journal.taint("forced-unload", inst.name,
                                   "rmmod --force: did not wait for users")
            else:
                pending = self.wait_quiet(inst, time.monotonic() + timeout, holds=wait,
                                          progress=progress)
                if not pending and not wait:
                    with self.table.lock:
                        pending = inst.holders()  # taken while we waited for calls in flight
        except BaseException as exc:
            self._republish(inst, removed, f"unload failed before exit: {brief(exc)}")
            del removed
            raise
        if pending:
            self._republish(inst, removed, f"unload rolled back: busy ({'; '.join(pending)})")
            # The traceback of what we raise keeps this frame: it must not keep the
            # module's implementations (a caller may force the unload in its handler).
            del removed
            raise ModuleBusy(
                f"cannot remove {inst.name!r}: still busy after {timeout:g}s "
                f"({'; '.join(pending)}); the unload was rolled back and it is LIVE again "
                f"(release it, retry with a longer timeout, or use force=True)",
                module=inst.name, holders=tuple(pending),
            )
        return removed

    def _republish(self, inst: Instance, removed: list[tuple[str, Impl]], why: str) -> None:
        with self.table.lock:
            self.hooks.publish_unlocked(removed)
            notice = self.journal.move_unlocked(inst, State.LIVE)
        self.hooks.run_replays()
        self.journal.notify(notice)
        self.journal.event("unload-refused", inst.name, why)

    def _finish_going(self, inst: Instance, *, wait: bool, timeout: float, force: bool,
                      progress: Progress | None) -> None:
        """rmmod of a module left GOING by an operation that stopped half way."""
        pending: list[str] = []
        if force:
            self.journal.taint("forced-unload", inst.name, "rmmod --force: did not wait")
        else:
            pending = self.wait_quiet(inst, time.monotonic() + timeout, holds=wait,
                                      progress=progress)
            pending += [] if wait else inst.holders()
        if pending:
            raise ModuleBusy(f"cannot finish removing {inst.name!r} (GOING): still busy "
                             f"after {timeout:g}s ({'; '.join(pending)}) (release it, retry, "
                             f"or use force=True)", module=inst.name, holders=tuple(pending))
        self.teardown.finish(inst)

    def wait_quiet(self, inst: Instance, deadline: float, *, holds: bool,
                   progress: Progress | None = None) -> list[str]:
        return wait_quiet(inst, self.hooks, self.bridge, deadline, holds=holds,
                          progress=progress)

    # ------------------------------------------------------- params, replace, close

    def set_param(self, name: str, key: str, value: object) -> object:
        """``Host.set_param``."""
        # Not under the operation lock: an rmmod waiting for holds must not hold up a
        # parameter change. A module going down meanwhile is running its own callback,
        # which the unload sees as code in flight and waits for.
        with self._param_lock:
            inst = self.table.get_live(name)
            old, new = _params.change(inst.params, inst.param_callbacks, key, value)
            self.journal.event("param", inst.name, f"param {key}={new!r} (was {old!r})",
                               key=key, value=new)
            return new

    def replace(self, name: str, path: str | os.PathLike[str] | None, *,
                timeout: float | None, cascade: bool, downgrade: bool,
                params: Mapping[str, object]) -> Module:
        """``Host.replace``: the steps, and when the lock is taken, are ``_upgrade``'s."""
        return _upgrade.replace(self, name, path, timeout=timeout, cascade=cascade,
                                downgrade=downgrade, params=params)

    def close(self, timeout: float | None, detach: Callable[[], None] | None) -> bool:
        """Unload everything, dependents first; False if it was closed already."""
        with self.op_lock:
            if self.closed:
                return False
            self._refuse_from_inside()
            self.closed = True
            if detach is not None:
                detach()  # a clean shutdown keeps the saved set for next start
            limit = self.settings.timeout if timeout is None else timeout
            names = self.table.names
            used_by = self.table.used_by_map()
            # Newest first among modules that do not depend on each other, as rmmod by hand.
            for name in _deps.dependents_order(list(reversed(names)), used_by):
                inst = names.get(name)
                if inst is None or inst.state is not State.LIVE:
                    continue
                busy = False
                try:
                    self.unload(inst, wait=True, timeout=limit, force=False)
                except ModuleBusy:
                    busy = True  # force outside the handler: its traceback holds the module
                if busy:
                    self.unload(inst, wait=False, timeout=limit, force=True)
            for old in list(self.table.pending):  # old versions still draining after an upgrade
                if self.wait_quiet(old, time.monotonic() + limit, holds=True):
                    self.journal.taint("forced-unload", old.name, "closed while still in use")
                self.teardown.finish(old)
            self.teardown.close()  # the spare exit thread, and every verdict in
            self.registrar.shutdown()
            return True

    def _refuse_from_inside(self) -> None:
        """close() from a module's own code would wait for itself: refuse, change nothing."""
        for inst in self.table.everyone_unlocked():
            inside = _quiesce.current_thread_in(inst.namespace_ids, inst.id)
            if inside is not None or threading.get_ident() in inst.own_thread_idents():
                raise ModuleBusy(
                    f"cannot close the host from inside module {inst.name!r} "
                    f"({inside or 'its own thread'}): it would wait for itself "
                    f"(close it from the thread that owns the host)",
                    module=inst.name, holders=(f"the calling thread, at {inside}",),
                )
