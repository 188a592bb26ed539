"""The host: the module table, its locks, and the orchestration of every lifecycle step.

This is the file where everything joins up; the mechanisms live elsewhere (dispatch in
``_hooks``, finding running code in ``_quiesce``, namespaces in ``_loader``, managed
resources in ``_context``, the leak check in ``_leaks``).

Locks:

``_op_lock`` (an RLock) serialises module operations -- insmod, modprobe, rmmod, close --
and is held while a module's body, ``init`` and ``exit`` run. It is reentrant so that an
``init`` may ``modprobe`` another module (a nested, complete operation).

``_lock`` is the module table's lock (``_table``, which lists what it protects).
"""

from __future__ import annotations

import concurrent.futures
import gc
import inspect
import itertools
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Any

from . import _deps, _leaks, _loader, _manifest, _provenance, _quiesce, _trampolines, _upgrade
from ._aio import LoopBridge
from ._async_api import AsyncHostMixin
from ._context import Registration
from ._depmod import DepmodReport
from ._hooks import ErrorPolicy, Hook, HookTable, Impl
from ._instance import Instance, Module, ModuleStatus, frozen_mapping
from ._journal import Journal, Subscriber
from ._leaks import Leak
from ._load import LoadMixin
from ._metadata import ModuleInfo
from ._modpath import ModPath
from ._records import Event, Hold, HostStatistics, Taint, brief
from ._scrub import Scrubber
from ._signing import Policy, Verifier, make_verifier
from ._state import State
from ._table import ModuleTable
from ._tamper import Baseline
from ._unload import BASELINE, UnloadMixin
from .config import Config
from .errors import (
    LivemodError,
    ModuleBusy,
    ModuleExists,
    ModuleGoing,
    ModuleNotFound,
    ParamError,
)

__all__ = ["Host"]

_log = logging.getLogger("livemod")


_host_ids = itertools.count(1)
_tokens = itertools.count(1)




class Host(LoadMixin, UnloadMixin, AsyncHostMixin):
    """A live module host: load, call, unload and inspect modules in this process.

    Args:
        modpath: folders searched by ``modprobe`` for ``<name>.py`` and ``<name>/`` packages.
        errors: what a hook does when an implementation raises: ``"raise"`` (propagate, the
            default) or ``"isolate"`` (log it, count it against the module, leave it out of
            the results and carry on). ``hook(name, errors=...)`` overrides it per hook.
        timeout: default seconds ``rmmod`` waits for calls in flight (and, with
            ``wait=True``, holds and pins).
        leak_check: after each unload, collect and check that the module's code is gone.
        exit_timeout: seconds a module's ``exit`` may take; past that the unload goes on
            without it and the host is tainted (exit runs in a thread of its own). ``None``
            runs exit in the unloading thread, unbounded: a little faster, especially while
            other threads keep the GIL busy (no hand-off to another thread).
        name: how the host introduces itself (``livemod status``); default host-<pid>-<n>.
        config: a ``livemod.toml`` read with ``livemod.config.load_config``: ``modprobe``
            then resolves its aliases, refuses its blacklist, applies its options (explicit
            params win) and loads its soft dependencies (best effort). See ``from_config``.
        signatures: ``"off"`` (default), ``"warn"`` (check; an unsigned or tampered module
            loads and taints the host) or ``"enforce"`` (refuse it with SignatureError,
            before any of its code runs). Needs the ``sign`` extra unless off.
        trusted_keys: a folder of ``*.pub`` Ed25519 public keys (``livemod keygen``).
        allow_outside_modpath: whether insmod may load a path outside the modpath under
            ``enforce`` (default: no; always yes under the other policies).
    """

    def __init__(
        self,
        modpath: Iterable[str | os.PathLike[str]] = (),
        *,
        errors: ErrorPolicy = "raise",
        timeout: float = 5.0,
        leak_check: bool = True,
        exit_timeout: float | None = 10.0,
        name: str | None = None,
        config: Config | None = None,
        signatures: Policy = "off",
        trusted_keys: str | os.PathLike[str] | None = None,
        allow_outside_modpath: bool | None = None,
    ) -> None:
        if errors not in ("raise", "isolate"):
            raise ValueError(f"errors must be 'raise' or 'isolate', not {errors!r}")
        self.modpath = [os.path.abspath(os.fspath(p)) for p in modpath]
        self.timeout = timeout
        self.leak_check = leak_check
        self.exit_timeout = exit_timeout
        self._id = next(_host_ids)
        self.name = name or f"host-{os.getpid()}-{self._id}"
        self._tag = f"_h{self._id}"
        self._op_lock = threading.RLock()
        self._table = ModuleTable(self._tag)
        self._lock = self._table.lock
        self._param_lock = threading.Lock()  # one parameter change (and its callbacks) at once
        self._hooks = HookTable(self._lock, errors, self._table.count_hook_error)
        self._journal = Journal(self._lock)
        self._modpath = ModPath(self.modpath)
        self._builtins = _loader.builtins_for(self._import_hook)
        _provenance.mark(self._builtins, _provenance.by_globals(self._table.by_private))
        self._scrubbers: list[Scrubber] = []
        self._verifier: Verifier = make_verifier(
            signatures, os.fspath(trusted_keys) if trusted_keys is not None else None
        )
        self.allow_outside_modpath = (
            signatures != "enforce" if allow_outside_modpath is None else allow_outside_modpath
        )
        self.config = config
        self._detach_state: Callable[[], None] | None = None
        self._bridge = LoopBridge()
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._closed = False
        self.started_at = time.time()
        _loader.install_finder()
        _trampolines.install()
        if not BASELINE:  # before any module could have touched livemod
            BASELINE.append(Baseline())
        _leaks.watch_collections()

    # ---------------------------------------------------------------- public: loading

    def insmod(self, path: str | os.PathLike[str], **params: object) -> Module:
        """Load exactly one module from ``path`` (a ``.py`` file or a package folder).

        Its dependencies must already be loaded (``modprobe`` loads them for you).

        Returns:
            The LIVE module.
        Raises:
            ModuleNotFound, ManifestError, ParamError, DependencyError, ModuleExists,
            InitError (the load was rolled back; nothing it registered was ever visible).
        """
        with self._op_lock:
            self._check_open()
            return self._load(path, params)

    @classmethod
    def from_config(cls, config: Config, *, restore: bool = True) -> Host:
        """A host set up from a configuration: its settings, then (if ``state_file`` is set)
        the modules and params saved by its previous run, then the ``load`` list.

        From then on every change is saved to the state file. A module of the ``load`` list
        (or of the state file) that fails is logged in the event log; the rest still load.
        """
        from ._statefile import StateFile

        host = cls(**config.host.host_kwargs(), config=config)
        state_file = config.host.state_file
        if state_file is not None:
            state = StateFile(state_file)
            if restore:
                report = state.restore(host)
                for failure in report.failed:
                    _log.error("restoring %r from %s failed: %s", failure.name, state_file,
                               failure.error)
            host._detach_state = state.attach(host)
        for plan in config.load_plan():
            if host._table.find(plan.name) is not None:
                continue  # restored with the params it had; options apply to new loads
            try:
                host.modprobe(plan.requested)
            except LivemodError as exc:
                host._event("load-failed", plan.name, f"start-up load failed: {exc}")
        return host

    def modprobe(self, name: str, **params: object) -> Module:
        """Load ``name`` (or an alias) from the modpath, dependencies first.

        ``params`` are for ``name`` itself. If it is already loaded, its handle is returned.
        If any module of the chain fails, the ones this call loaded are unloaded again.
        With a ``config``, its aliases, blacklist, options and soft dependencies apply.
        """
        if self.config is not None:
            plan = self.config.modprobe_plan(name, params)
            loaded = self._table.find(plan.name)
            found = loaded.info if loaded is not None else self._modpath.find(plan.name)
            if found is not None and found.name != plan.name:
                # An alias from the module's own manifest: the config speaks of real names.
                plan = self.config.modprobe_plan(found.name, params)
            with self._op_lock:
                for soft in plan.pre:
                    self._modprobe_soft(soft, plan.name, "pre")
                module = self._modprobe(plan.name, plan.params)
                for soft in plan.post:
                    self._modprobe_soft(soft, plan.name, "post")
                return module
        return self._modprobe(name, params)

    def _modprobe_soft(self, soft: str, owner: str, when: str) -> None:
        try:
            self.modprobe(soft)
        except LivemodError as exc:
            self._event("load-failed", soft, f"soft dependency ({when}) of {owner!r} "
                        f"not loaded: {exc}")

    def _modprobe(self, name: str, params: Mapping[str, object]) -> Module:
        with self._op_lock:
            self._check_open()
            loaded = self._table.find(name)
            if loaded is not None:
                if params:
                    raise ModuleExists(
                        f"module {loaded.name!r} is already loaded; rmmod it first to load it "
                        f"with other parameters", module=loaded.name,
                    )
                return Module(loaded)
            versions = {n: i.info.version for n, i in self._table.names.items()}
            order = _deps.resolve_load_order(name, self._modpath.find, versions)
            done: list[Module] = []
            try:
                for info in order:
                    root = info is order[-1]
                    done.append(self._load(info.path, params if root else {}))
                    done[-1]._inst.auto = not root
            except BaseException:
                for module in reversed(done):
                    self._unload(self._table.names[module.name], wait=False, timeout=self.timeout,
                                 force=False)
                raise
            return done[-1]

    # -------------------------------------------------------------- public: unloading

    def rmmod(
        self,
        name: str,
        *,
        wait: bool = False,
        timeout: float | None = None,
        force: bool = False,
        cascade: bool = False,
        progress: Callable[[str, list[str]], object] | None = None,
    ) -> None:
        """Unload a module: unpublish, wait until quiet, run exit and managed undo, free.

        Args:
            wait: also wait for holds and pins to be released (woken by the last one);
                without it, a held or pinned module is refused at once.
            timeout: seconds to wait for calls in flight (always waited for) and, with
                ``wait``, holds and pins; default ``Host(timeout=...)``. On timeout the
                unload is rolled back: the module is republished and LIVE again.
            force: do not wait at all; taints the host.
            cascade: remove the modules that use this one first.
            progress: called as ``progress(name, pending)`` about twice a second while the
                unload waits, with what it is waiting for (for ``livemod rmmod --wait``).
        Raises:
            ModuleNotFound, ModuleBusy (with ``.holders``), ModuleGoing.
        """
        with self._op_lock:
            inst = self._table.get_live(name)
            limit = self.timeout if timeout is None else timeout
            users = self._table.used_by(inst)
            if users and not cascade:
                holders = tuple(f"module {u!r}" for u in users)
                raise ModuleBusy(
                    f"cannot remove {inst.name!r}: used by {', '.join(map(repr, users))} "
                    f"(rmmod {users[0]} first, or use cascade=True)",
                    module=inst.name, holders=holders,
                )
            if users:
                closure = self._table.dependents_closure(inst.name)
                if not (wait or force):  # refuse before removing anything, the module too
                    for dep in (*closure, inst.name):
                        self._table.refuse_if_held(self._table.names[dep])
                for dep in closure:
                    self._unload(self._table.names[dep], wait=wait, timeout=limit, force=force,
                                 progress=progress)
            self._unload(inst, wait=wait, timeout=limit, force=force,
                                 progress=progress)

    def replace(
        self,
        name: str,
        path: str | os.PathLike[str] | None = None,
        *,
        timeout: float | None = None,
        cascade: bool = False,
        downgrade: bool = False,
        **params: object,
    ) -> Module:
        """Hot upgrade: load ``path`` (default: the module's own file, re-read) beside the
        running version, hand its state over, and switch to it in one step per hook.

        If the old version defines ``handover(mod)``, its return value is given to the new
        one's init as ``mod.handover_state`` (init may refuse it by raising). It is called
        after the new version's body ran, before its init; since that init may still fail
        and leave the old version running, ``handover`` should give state, not tear down. Parameters
        carry over; ``params`` override them. Returns the new Module once the old version is
        GONE -- or, if it could not drain within ``timeout``, at once with the old version
        left GOING ("removal pending", see lsmod and ``Module.removal_pending``) to be
        removed when its last user is done.

        Raises:
            UpgradeError: a downgrade without ``downgrade=True``, another module name, or
                dependents that imported the old objects directly without ``cascade=True``.
            ManifestError, ParamError, DependencyError, InitError: the new version failed;
                the old one is untouched and keeps serving.
        """
        with self._op_lock:
            self._check_open()
            return _upgrade.replace(self, name, path, timeout=timeout, cascade=cascade,
                                    downgrade=downgrade, params=params)

    def modprobe_remove(
        self, name: str, *, wait: bool = False, timeout: float | None = None
    ) -> list[str]:
        """``modprobe -r``: remove ``name``, then the dependencies that ``modprobe`` loaded
        only for it and that nothing uses any more. Returns the names removed, in order.

        A dependency that cannot be removed (held, busy) is left loaded; the module itself
        must be removable or this raises as ``rmmod`` does.
        """
        with self._op_lock:
            inst = self._table.get_live(name)
            removed = [inst.name]
            candidates = sorted(inst.uses)
            self.rmmod(inst.name, wait=wait, timeout=timeout)
            while candidates:
                dep = self._table.find(candidates.pop(0))
                if dep is None or not dep.auto or self._table.used_by(dep):
                    continue
                try:
                    self.rmmod(dep.name, wait=wait, timeout=timeout)
                except (ModuleBusy, ModuleGoing) as exc:
                    self._event("unload-refused", dep.name, f"modprobe -r left it: {exc}")
                    continue
                removed.append(dep.name)
                candidates.extend(sorted(dep.uses))
            return removed

    def close(self, *, timeout: float | None = None) -> None:
        """Unload every module, dependents first; the host stays queryable afterwards.

        Each module gets ``timeout`` seconds to go quiet (holds and pins included); one that
        does not is forced (which taints the host), so ``close`` always finishes.
        """
        with self._op_lock:
            if self._closed:
                return
            self._refuse_from_inside()
            self._closed = True
            if self._detach_state is not None:
                self._detach_state()  # a clean shutdown keeps the saved set for next start
            limit = self.timeout if timeout is None else timeout
            used_by = {n: self._table.used_by(i) for n, i in self._table.names.items()}
            # Newest first among modules that do not depend on each other, as rmmod by hand.
            for name in _deps.dependents_order(list(reversed(self._table.names)), used_by):
                inst = self._table.names.get(name)
                if inst is None or inst.state is not State.LIVE:
                    continue
                busy = False
                try:
                    self._unload(inst, wait=True, timeout=limit, force=False)
                except ModuleBusy:
                    busy = True  # force outside the handler: its traceback holds the module
                if busy:
                    self._unload(inst, wait=False, timeout=limit, force=True)
            for old in list(self._table.pending):  # old versions still draining after an upgrade
                if self._wait_quiet(old, time.monotonic() + limit, holds=True):
                    self._taint("forced-unload", old.name, "closed while still in use")
                self._finish(old)
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> Host:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ------------------------------------------------------------- public: inspection

    def lsmod(self) -> list[ModuleStatus]:
        """One frozen row per module in the table, in load order."""
        with self._lock:
            return self._table.statuses_unlocked(self._journal.taints_unlocked())

    def modinfo(self, path_or_name: str | os.PathLike[str]) -> ModuleInfo:
        """Static metadata of a module file, package, loaded module or modpath name.

        Never executes the module.
        """
        text = os.fspath(path_or_name)
        if os.sep in text or text.endswith(".py") or os.path.exists(text):
            return _manifest.read_manifest(text)
        inst = self._table.find(text)
        if inst is not None:
            return inst.info
        info = self._modpath.find(text)
        if info is None:
            raise ModuleNotFound(
                f"no module {text!r} is loaded or on the modpath {self.modpath} "
                f"(give a path, or add its folder to modpath)", module=text,
            )
        return info

    def depmod(self, *, full: bool = False) -> DepmodReport:
        """Bring the modpath index up to date and save it in each folder (like depmod).

        ``modprobe`` keeps the index fresh by itself (a stat per lookup); this rebuilds it
        and reports broken modules. ``full`` reads every module again.
        """
        return self._modpath.depmod(full=full)

    def hook(self, name: str, *, errors: ErrorPolicy | None = None) -> Hook:
        """The hook point ``name``, created on first use. ``errors`` applies at creation."""
        return self._hooks.get(name, errors)

    def hold(self, name: str) -> Hold:
        """Take a hold on a LIVE module; release it (or leave the ``with`` block) when done.

        Raises:
            ModuleNotFound: not loaded (or not yet LIVE).
            ModuleGoing: it is being unloaded.
        """
        caller = sys._getframe(1)
        where = _quiesce.describe_frame(caller)
        del caller
        return self._table.hold(name, where)

    def leaks(self) -> list[Leak]:
        """Unloaded modules whose objects are still alive, with who holds them.

        Collects garbage first; an entry is dropped once its objects are finally collected.
        """
        gc.collect()
        return [w.to_leak() for w in self._journal.leak_watches()]

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call ``callback(name, old_state, new_state)`` on every transition.

        Called synchronously in the thread doing the operation. Raising from the transition
        to COMING vetoes the load (it fails cleanly); raising elsewhere is logged.
        Returns a function that unsubscribes.
        """
        return self._journal.subscribe(callback)

    def on_event(self, listener: Callable[[Event], object]) -> Callable[[], None]:
        """Call ``listener(event)`` for every new entry of the event log (see ``events``).

        Called synchronously in the thread that caused the event; a failing listener is
        logged. Returns a function that unsubscribes.
        """
        return self._journal.on_event(listener)

    def scrubber(self, fn: Scrubber) -> Scrubber:
        """Add a scrubber for a registry livemod does not know (usable as a decorator).

        After each unload (after exit, the managed undo and livemod's own scrub of
        CPython's registries) ``fn(scrub)`` is called with a :class:`livemod.Scrub` for
        the module: ``scrub.owns(obj)`` says whether an object is the module's without
        running its code, and ``scrub.removed(what)`` reports what ``fn`` took out. A
        scrubber must not keep what it is given; one that raises is logged and the unload
        completes. Returns ``fn``.
        """
        with self._lock:
            self._scrubbers.append(fn)
        return fn

    def set_param(self, name: str, key: str, value: object) -> object:
        """Set a writable parameter of a LIVE module; returns the converted value.

        The value is converted and validated as at load (strings as an operator types
        them), then the module's ``mod.on_param`` callbacks are told. If one of them raises,
        the old value is put back and ``ParamError`` says why.

        Raises:
            ModuleNotFound, ModuleGoing, ParamError (unknown, not writable, bad value,
            refused by the module).
        """
        # Not under the operation lock: an rmmod waiting for holds must not hold up a
        # parameter change. A module going down meanwhile is running its own callback,
        # which the unload sees as code in flight and waits for.
        with self._param_lock:
            inst = self._table.get_live(name)
            old = inst.params.as_dict().get(key)
            new = inst.params._set(key, value)
            for callback in list(inst.param_callbacks):
                try:
                    callback(key, new)
                except Exception as exc:
                    inst.params._set(key, old)
                    raise ParamError(
                        f"module {inst.name!r} refused {key}={new!r}: {brief(exc)} "
                        f"(the old value {old!r} is kept)", module=inst.name,
                    ) from exc
            self._event("param", inst.name, f"param {key}={new!r} (was {old!r})",
                        key=key, value=new)
            return new

    def statistics(self) -> HostStatistics:
        """A frozen snapshot: identity, uptime, module counts, load/unload totals, taints."""
        journal = self._journal
        with self._lock:
            counts = journal.counts_unlocked()
            return HostStatistics(
                name=self.name, pid=os.getpid(), started_at=self.started_at,
                uptime=time.time() - self.started_at, modules=len(self._table.names),
                live=sum(i.state is State.LIVE for i in self._table.names.values()),
                hooks=len(self._hooks.hooks), loads=counts["load"],
                unloads=counts["unload"], failed_loads=counts["load-failed"],
                refused_unloads=counts["unload-refused"], leaked=journal.leak_count_unlocked(),
                taints=tuple(journal.taints_unlocked()),
            )

    @property
    def tainted(self) -> tuple[Taint, ...]:
        """Every taint this host has taken, oldest first (empty if clean)."""
        return self._journal.taints()

    def events(self) -> list[Event]:
        """The recent event log, oldest first (bounded)."""
        return self._journal.events()

    @property
    def closed(self) -> bool:
        return self._closed

    def __repr__(self) -> str:
        return f"<livemod.Host #{self._id} {len(self._table.names)} modules>"

    # --------------------------------------------------------- private: registrations

    def _register(
        self, inst: Instance, hook: str, fn: Callable[..., Any], priority: int
    ) -> Registration:
        impl = Impl(fn, owner=inst.id, owner_name=inst.name, priority=priority,
                    seq=self._hooks.next_seq())
        entry = (hook, impl)

        def remove() -> None:
            with self._lock:
                if entry in inst.staged:
                    inst.staged.remove(entry)
                else:
                    self._hooks.remove_unlocked(hook, impl)

        with self._lock:
            self._check_can_register_unlocked(inst, f"register on hook {hook!r}")
            if inst.state is State.COMING:
                inst.staged.append(entry)
            else:
                self._hooks.publish_unlocked([entry])
        token = inst.undo.push(f"hook {hook!r} <- {impl.describe()}", remove)

        def unregister() -> None:
            if inst.undo.discard(token) is not None:
                remove()

        return Registration(hook, impl, unregister)

    def _export(self, inst: Instance, name: str, obj: object) -> None:
        with self._lock:
            self._check_can_register_unlocked(inst, f"export {name!r}")
            if name in inst.staged_exports or name in inst.exports:
                raise ValueError(f"module {inst.name!r} already exports {name!r}")
            if inst.state is State.COMING:
                inst.staged_exports[name] = obj
            else:
                inst.exports = frozen_mapping({**inst.exports, name: obj})

        def unexport() -> None:
            with self._lock:
                inst.staged_exports.pop(name, None)
                inst.exports = frozen_mapping({k: v for k, v in inst.exports.items() if k != name})

        inst.undo.push(f"export {name!r}", unexport)

    def _start_when_live(self, inst: Instance, start: Callable[[], None]) -> None:
        with self._lock:
            self._check_can_register_unlocked(inst, "start a thread")
            if inst.state is State.COMING:
                inst.staged_starts.append(start)
                return
        start()

    def _check_can_register_unlocked(self, inst: Instance, action: str) -> None:
        if inst.state not in (State.COMING, State.LIVE):
            raise ModuleGoing(
                f"module {inst.name!r} is {inst.state.name}; it cannot {action} now",
                module=inst.name,
            )

    def _complete(self, result: object, what: str) -> object:
        """Finish what a module function returned: an awaitable is run on the loop."""
        if inspect.isawaitable(result):
            return self._bridge.run(result, what)
        return result

    def _executor(self) -> concurrent.futures.ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = concurrent.futures.ThreadPoolExecutor(
                    max_workers=4, thread_name_prefix=f"livemod-{self._id}-work"
                )
            return self._pool

    # ------------------------------------------------------------ private: the table

    def _check_open(self) -> None:
        if self._closed:
            raise LivemodError("this host is closed; create a new Host to load modules")

    def _refuse_from_inside(self) -> None:
        """close() from a module's own code would wait for itself: refuse, change nothing."""
        for inst in (*self._table.names.values(), *self._table.pending):
            inside = _quiesce.current_thread_in(inst.namespace_ids)
            if inside is not None or threading.get_ident() in inst.own_thread_idents():
                raise ModuleBusy(
                    f"cannot close the host from inside module {inst.name!r} "
                    f"({inside or 'its own thread'}): it would wait for itself "
                    f"(close it from the thread that owns the host)",
                    module=inst.name, holders=(f"the calling thread, at {inside}",),
                )

    def _modules_of(self, inst: Instance) -> list[Any]:
        return _loader.namespaces_of(inst.private_name)

    # ------------------------------------------------------------ private: reporting

    def _event(self, kind: str, module: str, message: str, **data: object) -> None:
        self._journal.event(kind, module, message, **data)

    def _taint(self, flag: str, module: str, reason: str) -> None:
        self._journal.taint(flag, module, reason)
