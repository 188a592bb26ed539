"""The host: the public face of one live module host, a facade over the parts that do the work.

``Host`` builds its collaborators and delegates to them; it keeps no state of its own
beyond its identity and settings:

- ``_table`` (``_table.ModuleTable``): the instances by name, alias and private name, and
  the lock over them (its docstring lists what the lock protects);
- ``_journal`` (``_journal.Journal``): the only writer of a module's state, subscribers, the
  event log, taints and counts;
- ``_hooks`` (``_hooks.HookTable``): hook points and their lock-free dispatch;
- ``_registrar`` (``_registrar.Registrar``): what module code may ask of the host (handed to
  ``ModuleContext`` and the import views instead of the host);
- ``_life`` (``_lifecycle.Lifecycle``): load, unload, replace, the modprobe chain and close,
  serialised by its operation lock.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import os
import sys
import time
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any

from . import _leaks, _loader, _quiesce, _request, _serve, _size, _startup, _wire
from ._aio import LoopBridge
from ._depmod import DepmodReport
from ._hooks import ErrorPolicy, Hook
from ._hooktable import HookTable
from ._imports import ModuleView
from ._instance import Module, ModuleStatus
from ._journal import Journal, Subscriber
from ._leaks import Leak
from ._lifecycle import Lifecycle
from ._metadata import ModuleInfo
from ._modpath import ModPath
from ._records import Event, Hold, HostStatistics, Taint
from ._registrar import Registrar
from ._scrub import ScrubberMixin
from ._settings import Settings
from ._signing import Policy, enforcing, make_verifier
from ._state import State
from ._table import ModuleTable
from .config import Config
from .errors import ModuleNotFound

if TYPE_CHECKING:
    from typing import Self

__all__ = ["Host"]
_host_ids = itertools.count(1)


class Host(ScrubberMixin):
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
        control: serve the control socket: ``True`` (default path) or a path (``close()``
            stops it; ``host.control`` is the server); ``service="web"``: a worker's one.
        autoload: ``mod.require`` of a module on the modpath loads it (else DependencyError).
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
        control: bool | str | os.PathLike[str] = False,
        autoload: bool = True, service: str | None = None,
    ) -> None:
        if errors not in ("raise", "isolate"):
            raise ValueError(f"errors must be 'raise' or 'isolate', not {errors!r}")
        self._id = next(_host_ids)
        self.name = name or f"host-{os.getpid()}-{self._id}"
        self._tag = _wire.host_tag(name, self._id)
        self._settings = Settings(
            modpath=[os.path.abspath(os.fspath(p)) for p in modpath], timeout=timeout,
            leak_check=leak_check, exit_timeout=exit_timeout,
            allow_outside_modpath=(signatures != "enforce" if allow_outside_modpath is None
                                   else allow_outside_modpath),
        )
        self.config = config
        self.started_at = time.time()
        self._table = ModuleTable(self._tag)
        self._journal = Journal(self._table.lock)
        self._hooks = HookTable(self._table.lock, errors, self._table.count_hook_error)
        self._bridge = LoopBridge()
        self._registrar = Registrar(self._table, self._hooks, self._journal, self._bridge,
                                    self._id)
        verifier = make_verifier(
            signatures, os.fspath(trusted_keys) if trusted_keys is not None else None
        )
        self._modpath = ModPath(self.modpath, precheck=enforcing(verifier))
        self._life = Lifecycle(self._table, self._hooks, self._journal, self._bridge, verifier,
                               self._settings, self._registrar, self._modpath)
        self._detach_state: Callable[[], None] | None = None
        _loader.install_finder()
        _leaks.watch_collections()
        self._registrar.autoload = self.modprobe if autoload else None
        self.control: Any = _serve.serve_control(self, control, service)  # or None

    # The settings the lifecycle reads, as plain attributes of the host.

    @property
    def modpath(self) -> list[str]:
        return self._settings.modpath

    @property
    def timeout(self) -> float:
        return self._settings.timeout

    @timeout.setter
    def timeout(self, value: float) -> None:
        self._settings.timeout = value

    @property
    def leak_check(self) -> bool:
        return self._settings.leak_check

    @leak_check.setter
    def leak_check(self, value: bool) -> None:
        self._settings.leak_check = value

    @property
    def exit_timeout(self) -> float | None:
        return self._settings.exit_timeout

    @exit_timeout.setter
    def exit_timeout(self, value: float | None) -> None:
        self._settings.exit_timeout = value

    @property
    def allow_outside_modpath(self) -> bool:
        return self._settings.allow_outside_modpath

    @allow_outside_modpath.setter
    def allow_outside_modpath(self, value: bool) -> None:
        self._settings.allow_outside_modpath = value

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
        self._life.check_open()
        # Read, signature-check and parse before taking the operation lock: what that costs
        # is the file's to decide, and other module operations need not wait for it.
        source = self._life.read(path)
        with self._life.op_lock:
            self._life.check_open()
            return self._life.load(path, params, source)

    @classmethod
    def from_config(cls, config: Config, *, restore: bool = True) -> Host:
        """A host set up from a configuration: its settings, then (if ``state_file`` is set)
        the modules and params saved by its previous run, then the ``load`` list.

        From then on every change is saved to the state file. A module of the ``load`` list
        (or of the state file) that fails is logged in the event log; the rest still load.
        """
        host = cls(**config.host.host_kwargs(), config=config)
        _startup.restore_and_load(host, config, restore=restore)
        return host

    def modprobe(self, name: str, **params: object) -> Module:
        """Load ``name`` (or an alias) from the modpath, dependencies first.

        ``params`` are for ``name`` itself. If it is already loaded, its handle is returned.
        If any module of the chain fails, the ones this call loaded are unloaded again.
        With a ``config``, its aliases, blacklist, options and soft dependencies apply.
        """
        return self._life.modprobe(name, params, self.config)

    def request(self, key: str, **params: object) -> Module:
        """Load on demand: modprobe ``key``'s module (name, alias, best pattern; _request)."""
        name = _request.resolve(key, self.config, self._table, self._modpath)
        return self.modprobe(name, **params)

    def modprobe_plan(self, name: str, *, include_loaded: bool = False) -> list[ModuleInfo]:
        """What modprobe would load, in order, loading nothing (``-n``; ``--show-depends``)."""
        return self._life.plan(name, include_loaded, self.config)

    # -------------------------------------------------------------- public: unloading

    def rmmod(self, name: str, *, wait: bool = False, timeout: float | None = None,
              force: bool = False, cascade: bool = False,
              progress: Callable[[str, list[str]], object] | None = None) -> None:
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
        self._life.rmmod(name, wait=wait, timeout=timeout, force=force, cascade=cascade,
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
        and leave the old version running, ``handover`` should give state, not tear down.
        Parameters carry over; ``params`` override them. Returns the new Module once the old
        version is GONE -- or, if it could not drain within ``timeout``, at once with the old
        version left GOING ("removal pending", see lsmod and ``Module.removal_pending``) to
        be removed when its last user is done.

        Raises:
            UpgradeError: a downgrade without ``downgrade=True``, another module name, or
                dependents that imported the old objects directly without ``cascade=True``.
            ManifestError, ParamError, DependencyError, InitError: the new version failed;
                the old one is untouched and keeps serving.
        """
        return self._life.replace(name, path, timeout=timeout, cascade=cascade,
                                  downgrade=downgrade, params=params)

    def modprobe_remove(
        self, name: str, *, wait: bool = False, timeout: float | None = None
    ) -> list[str]:
        """``modprobe -r``: remove ``name``, then the dependencies that ``modprobe`` loaded
        only for it and that nothing uses any more. Returns the names removed, in order.

        A dependency that cannot be removed (held, busy) is left loaded; the module itself
        must be removable or this raises as ``rmmod`` does.
        """
        return self._life.remove(name, wait=wait, timeout=timeout)

    def close(self, *, timeout: float | None = None) -> None:
        """Unload every module, dependents first; the host stays queryable afterwards.

        Each module gets ``timeout`` seconds to go quiet (holds and pins included); one that
        does not is forced (which taints the host), so ``close`` always finishes.
        """
        _serve.stop(self.control)  # stop taking requests before anything is unloaded
        self._life.close(timeout, self._detach_state)

    def __enter__(self) -> Host:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ----------------------------------------------------------- public: asyncio forms
    # Each runs the synchronous operation in a worker thread (``asyncio.to_thread``) after
    # noting the running loop, so the loop keeps serving -- including the calls an unload
    # waits for -- while async init/exit and the module's tasks run on the loop (``_aio``).
    # Cancelling the awaiting task does not cancel the operation: it completes in its thread.

    async def ainsmod(self, path: str | os.PathLike[str], **params: object) -> Module:
        """``insmod`` from a running event loop: the operation runs in a worker thread, so
        the loop keeps serving; an async ``init`` runs on the loop."""
        self._bridge.attach()
        return await asyncio.to_thread(self.insmod, path, **params)

    async def amodprobe(self, name: str, **params: object) -> Module:
        """``modprobe`` from a running event loop (see ``ainsmod``)."""
        self._bridge.attach()
        return await asyncio.to_thread(self.modprobe, name, **params)

    async def armmod(self, name: str, *, wait: bool = False, timeout: float | None = None,
                     force: bool = False, cascade: bool = False) -> None:
        """``rmmod`` from a running event loop: tasks in flight keep running while it waits;
        the module's own tasks are cancelled and awaited; an async ``exit`` runs on the loop."""
        self._bridge.attach()
        await asyncio.to_thread(
            self.rmmod, name, wait=wait, timeout=timeout, force=force, cascade=cascade
        )

    async def areplace(self, name: str, path: str | os.PathLike[str] | None = None, *,
                       timeout: float | None = None, cascade: bool = False,
                       downgrade: bool = False, **params: object) -> Module:
        """``replace`` from a running event loop: the old version's calls in flight keep
        running on the loop while it drains; async handover/init/exit run on the loop."""
        self._bridge.attach()
        return await asyncio.to_thread(
            self.replace, name, path, timeout=timeout, cascade=cascade, downgrade=downgrade,
            **params,
        )

    async def aclose(self, *, timeout: float | None = None) -> None:
        """``close`` from a running event loop."""
        self._bridge.attach()
        await asyncio.to_thread(self.close, timeout=timeout)

    async def __aenter__(self) -> Self:
        self._bridge.attach()
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    # ------------------------------------------------------------- public: inspection

    def lsmod(self) -> list[ModuleStatus]:
        """One frozen row per module in the table, in load order."""
        with self._table.lock:
            rows = self._table.statuses_unlocked(self._journal.taints_unlocked())
            everyone = self._table.everyone_unlocked()
        return _size.sized(rows, everyone)  # measured outside the lock: queries never wait

    def modinfo(self, path_or_name: str | os.PathLike[str]) -> ModuleInfo:
        """Static metadata of a module file, package, loaded module or modpath name.

        Never executes the module.
        """
        text = os.fspath(path_or_name)
        if os.sep in text or text.endswith(".py") or os.path.exists(text):
            return self._modpath.manifest(text)  # under enforce, the signature first
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

    def namespace(self, name: str) -> ModuleView:
        """A view of loaded module ``name``'s namespace, for the program that loaded it.

        ``host.namespace("rich").console.Console`` reaches the module's objects without
        hunting ``sys.modules`` for its private name. The view looks the module up on each
        access (it follows an upgrade) and does not keep it alive.

        Raises (on each access, not here):
            ModuleNotFound: the module is not loaded.
            ModuleGoing: it is being unloaded, or not yet LIVE.
        """
        return ModuleView(self._table, name)

    def hook(self, name: str, *, errors: ErrorPolicy | None = None) -> Hook:
        """The hook point ``name``, created on first use. ``errors`` applies at creation."""
        return self._hooks.get(name, errors)

    spec = property(lambda self: self._hooks.spec, doc=HookTable.spec.__doc__)
    hooks = property(lambda self: self._hooks.describe, doc=HookTable.describe.__doc__)

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
        On free-threaded 3.13, where no verdict is possible (unloaded code is immortal there),
        it returns ``[]`` and warns (``RuntimeWarning``) that the check cannot be verified;
        ``statistics().leak_check`` says the same.
        """
        _leaks.warn_if_unverifiable(self.leak_check, stacklevel=3)
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

    def set_param(self, name: str, key: str, value: object) -> object:
        """Set a writable parameter of a LIVE module; returns the converted value.

        The value is converted and validated as at load (strings as an operator types
        them), then the module's ``mod.on_param`` callbacks are told. If one of them raises,
        the old value is put back and ``ParamError`` says why.

        Raises:
            ModuleNotFound: no such module is loaded.
            ModuleGoing: it is being unloaded.
            ParamError: unknown, not writable, a bad value, or refused by the module.
        """
        return self._life.set_param(name, key, value)

    def statistics(self) -> HostStatistics:
        """A frozen snapshot: identity, uptime, module counts, load/unload totals, taints."""
        journal, table = self._journal, self._table
        journal.owed()  # leak verdicts of recent unloads: see _leak_judge
        with table.lock:
            counts = journal.counts_unlocked()
            return HostStatistics(
                name=self.name, pid=os.getpid(), started_at=self.started_at,
                uptime=time.time() - self.started_at, modules=len(table.names),
                live=sum(i.state is State.LIVE for i in table.names.values()),
                hooks=len(self._hooks.hooks), loads=counts["load"],
                unloads=counts["unload"], failed_loads=counts["load-failed"],
                refused_unloads=counts["unload-refused"], leaked=journal.leak_count_unlocked(),
                taints=tuple(journal.taints_unlocked()), leak_check=_leaks.state(self.leak_check),
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
        return self._life.closed

    def __repr__(self) -> str:
        return f"<livemod.Host #{self._id} {len(self._table.names)} modules>"
