"""The first stage of the lifecycle: LOADING, COMING, publish -- or a complete rollback.

A mixin of ``Host`` (the host is where the lifecycle joins up; this is its load half): read
the module once (manifest, code and signature from the same bytes), cheap checks that change
nothing first, the body in a private namespace, ``init`` with registrations staged, then one
publish; any failure discards everything the load took. Also here: ``__import__`` of
``livemod.mods.*`` by module code, which records "used by" edges.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

from . import _loader, _native, _params, _scrub
from ._context import ModuleContext
from ._hooks import HookTable
from ._imports import Exports, Namespace, watched_atexit
from ._instance import Instance, Module, frozen_mapping
from ._journal import Journal
from ._metadata import ModuleInfo
from ._records import brief, where_raised
from ._signing import Verifier
from ._source import ModuleSource, read_module
from ._state import State
from ._table import ModuleTable
from .errors import DependencyError, InitError, SignatureError

if TYPE_CHECKING:
    from .host import Host

__all__ = ["LoadMixin"]


class LoadMixin:
    """``_load`` and what it needs; the state lives on ``Host``."""

    if TYPE_CHECKING:
        _lock: threading.Lock
        _journal: Journal
        _hooks: HookTable
        _table: ModuleTable
        _builtins: dict[str, Any]
        _verifier: Verifier
        modpath: list[str]
        allow_outside_modpath: bool

        def _event(self, kind: str, module: str, message: str, **data: object) -> None: ...
        def _taint(self, flag: str, module: str, reason: str) -> None: ...
        def _complete(self, result: object, what: str) -> object: ...
        def _modules_of(self, inst: Instance) -> list[Any]: ...
        def _scrub(self, inst: Instance) -> None: ...
        def _check_livemod_intact(self, name: str) -> None: ...

    def _load(self, path: str | os.PathLike[str], params: Mapping[str, object]) -> Module:
        """LOADING -> COMING -> LIVE, or roll back completely. Caller holds ``_op_lock``."""
        # Cheap checks that change nothing come first (the kernel's load_module order).
        source = self._read(path)
        info = source.info
        values = _params.resolve(info.params, params, module=info.name)
        untrusted = self._verify(source)  # SignatureError here: nothing has changed yet
        with self._lock:
            self._table.check_free_unlocked(info)
            inst = self._new_instance_unlocked(info, values)
            self._table.put_unlocked(inst)
        inst.untrusted = untrusted
        self._bring_up(inst, source)
        self._publish(inst)
        return Module(inst)

    def _read(self, path: str | os.PathLike[str]) -> ModuleSource:
        """Read a module once; under ``enforce``, refuse paths outside the modpath."""
        source = read_module(path, signature=self._verifier.policy != "off")
        _native.check_room(source.info.name, source.by_path)  # NativeCacheFull: no change
        if self._verifier.policy == "enforce" and not self.allow_outside_modpath:
            where = source.info.path
            if not any(where.startswith(folder + os.sep) for folder in self.modpath):
                raise SignatureError(
                    f"refusing {where}: it is outside the modpath, and signatures are "
                    f"enforced (put it in a modpath folder, or allow_outside_modpath=True)",
                    module=source.info.name,
                )
        return source

    def _verify(self, source: ModuleSource) -> str | None:
        """Check the signature before any of the module's code runs (SignatureError under
        enforce); under warn, return why it will taint the host."""
        return self._verifier.check(source.info.name, source.files, source.signature)

    def _taint_if_untrusted(self, inst: Instance) -> None:
        if inst.untrusted is not None:
            self._taint("unsigned-module", inst.name, inst.untrusted)

    def _new_instance_unlocked(self, info: ModuleInfo, values: Mapping[str, object]) -> Instance:
        deps = self._table.check_depends_unlocked(info)
        inst = Instance(info, _params.Params(info.params, values, module=info.name))
        inst.private_name = self._table.private_name_unlocked(info.name)
        inst.uses.update(deps)
        self._table.by_private[inst.private_name] = inst
        return inst

    def _bring_up(
        self,
        inst: Instance,
        source: ModuleSource,
        handover: Callable[[], object] | None = None,
    ) -> None:
        """Run the body (LOADING) and init (COMING); on failure discard it and raise.

        ``handover`` (an upgrade) is asked for the old version's state after the body ran
        and before init, so a new version that does not even load never takes it.
        """
        info = inst.info
        self._journal.notify((inst, None, State.LOADING))  # it was born LOADING
        inst.scrub_before = _scrub.baseline()
        try:
            module = _loader.exec_module(
                inst.private_name, source.code, source_file=info.source_file,
                package_dir=info.path if info.is_package else None,
                builtins=self._builtins, files=source.by_path,
            )
            inst.module = module
            inst.namespace_ids = frozenset(id(vars(m)) for m in self._modules_of(inst))
            inst.files = frozenset(p for p in source.by_path if p.endswith(".py"))
            self._journal.transition(inst, State.COMING, veto=True)
            inst.context = ModuleContext(cast("Host", self), inst)
            inst.context.handover_state = handover() if handover is not None else None
            init = getattr(module, "init", None)
            if init is not None:
                self._complete(init(inst.context), f"init of {info.name!r}")
        except (KeyboardInterrupt, InitError):
            # An operator's Ctrl-C, or a handover that failed (already an InitError saying
            # so): roll back completely and let it propagate as it is.
            self._discard(inst)
            raise
        except BaseException as exc:
            # Exception, sys.exit(), and any other BaseException a module raises: a failed
            # load, never a reason for the host to exit.
            where = where_raised(exc, info)
            self._discard(inst)
            self._event("load-failed", inst.name, f"load failed at {where}: {brief(exc)}")
            raise InitError(
                f"module {info.name!r} failed to load at {where}: {brief(exc)} "
                f"(nothing it registered was published; fix it and load it again)",
                module=info.name,
            ) from exc
        self._check_livemod_intact(inst.name)

    def _publish(self, inst: Instance) -> None:
        with self._lock:
            self._hooks.publish_unlocked(inst.staged)
            inst.exports = frozen_mapping(inst.staged_exports)
            inst.staged, inst.staged_exports = [], {}
            starts, inst.staged_starts = inst.staged_starts, []
            inst.init_ok = True
        self._journal.transition(inst, State.LIVE)
        self._taint_if_untrusted(inst)
        for start in starts:
            start()
        self._event("load", inst.name, f"loaded {inst.info.version} from {inst.info.path}",
                    version=inst.info.version, path=inst.info.path,
                    params=inst.params.as_dict())

    def _discard(self, inst: Instance) -> None:
        """Undo a load that failed before LIVE: nothing was ever published."""
        inst.stopping.set()
        inst.undo.unwind(self._complete)
        self._scrub(inst)
        _loader.remove_modules(inst.private_name)
        with self._lock:
            if self._table.names.get(inst.name) is inst:  # during an upgrade v1 keeps the name
                self._table.drop_unlocked(inst)
            notice = self._journal.move_unlocked(inst, State.GONE)
        self._table.by_private.pop(inst.private_name, None)
        inst.release_code()
        self._journal.notify(notice)
        self._check_livemod_intact(inst.name)

    def _import_hook(self, name: str, fromlist: Sequence[str], importing: Any) -> Any:
        """``__import__`` of a livemod.mods.* (or watched) name from module code."""
        module = importing.get("__name__", "") if isinstance(importing, dict) else ""
        inst = None
        while module and inst is None:  # a submodule's package owns it
            inst = self._table.by_private.get(module)
            module = module.rpartition(".")[0]
        if inst is None or inst.state is State.GONE:
            raise ImportError(f"{name}: only modules loaded by this host may import it "
                              f"(the importing module is unloaded, or not livemod's)")
        return self._import_for(inst, name, fromlist)

    def _import_for(self, inst: Instance, name: str, fromlist: Sequence[str]) -> Any:
        """``__import__`` of a ``livemod.mods.*`` name by module ``inst``; records the edge."""
        if name == "atexit":
            return watched_atexit(inst)
        parts = name.split(".")[2:]
        if not parts:
            found = {leaf: self._import_dep(inst, leaf) for leaf in fromlist}
            return Namespace(found)
        target = self._import_dep(inst, parts[0])
        for depth in range(1, len(parts)):
            target = __import__(target.__name__ + "." + parts[depth], fromlist=("_",))
        if fromlist:
            return target
        import livemod

        return Namespace({"mods": Namespace({parts[0]: self._import_dep(inst, parts[0])})},
                          fallback=livemod)

    def _import_dep(self, inst: Instance, dep: str) -> Any:
        target = self._edge(inst, dep, "import")
        return target.module

    def _edge(self, inst: Instance, dep: str, how: str) -> Instance:
        with self._lock:
            target = self._table.usable_unlocked(dep)
            if target is None or target.module is None:
                raise ModuleNotFoundError(
                    f"module {inst.name!r} cannot {how} {dep!r}: it is not loaded (live) in "
                    f"this host (declare it in depends and load with modprobe)", name=dep,
                )
            if target is not inst and target.name not in inst.uses:
                if inst.name in self._table.uses_closure_unlocked(target):
                    raise DependencyError(
                        f"module {inst.name!r} cannot use {target.name!r}: {target.name!r} "
                        f"already uses {inst.name!r} (dependency cycle)",
                        module=inst.name, chain=(inst.name, target.name, inst.name),
                    )
                inst.uses.add(target.name)
            if how == "import" and target is not inst:
                inst.bound.add(target.name)
        return target

    def _require(self, inst: Instance, name: str) -> Any:
        try:
            target = self._edge(inst, name, "require")
        except ModuleNotFoundError as exc:
            raise DependencyError(str(exc), module=inst.name, chain=(inst.name, name)) from None
        return Exports(self._table, target.name)
