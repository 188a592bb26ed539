"""The registrar: what a module's own code may ask of its host, and nothing more.

``ModuleContext`` and the import views get a registrar, not the ``Host``: registering on a
hook, exporting, starting managed work once LIVE, requiring or importing another module
(which records the "used by" edge), tainting, the event-loop bridge and the worker pool.
Registrations made while the module is COMING are staged (published together when init
returns); made while LIVE they are published at once; otherwise refused.
"""

from __future__ import annotations

import concurrent.futures
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any, final

from ._aio import LoopBridge
from ._hooks import Hook, Impl
from ._hooktable import HookTable
from ._imports import Exports, Namespace, watched_atexit
from ._instance import Instance, frozen_mapping
from ._journal import Journal
from ._state import State
from ._table import ModuleTable
from .errors import DependencyError, ModuleGoing, ModuleNotFound

__all__ = ["Registrar"]


@final
class Registrar:
    """Registrations, dependency edges and shared services for one host's modules.

    The table's lock also protects the creation of ``_pool``.
    """

    __slots__ = ("_hooks", "_host_id", "_journal", "_pool", "_table", "autoload", "bridge")

    def __init__(self, table: ModuleTable, hooks: HookTable, journal: Journal,
                 bridge: LoopBridge, host_id: int) -> None:
        self._table = table
        self._hooks = hooks
        self._journal = journal
        self._host_id = host_id  # names the worker threads
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self.bridge = bridge
        # Host.modprobe under Host(autoload=True): require() of a module that is not loaded
        # loads it from the modpath first.
        self.autoload: Callable[[str], object] | None = None

    # --------------------------------------------------------------- registrations

    def hook(self, name: str) -> Hook:
        return self._hooks.get(name, None)

    def register(
        self, inst: Instance, hook: str, fn: Callable[..., Any], priority: int,
        wrapper: bool = False,
    ) -> tuple[Impl, Callable[[], None]]:
        """Put ``fn`` on ``hook`` for ``inst`` (staged while COMING); return the
        implementation and its early removal.

        Raises:
            SpecError: ``fn`` does not fit the hook's spec, or a wrapper is no generator.
        """
        impl = Impl(fn, owner=inst.id, owner_name=inst.name, priority=priority,
                    seq=self._hooks.next_seq(), wrapper=wrapper)
        entry = (hook, impl)
        with self._table.lock:
            _check_can_register_unlocked(inst, f"register on hook {hook!r}")
            self._hooks.check_unlocked(hook, impl)
            if inst.state is State.COMING:
                inst.own_list("staged").append(entry)
            else:
                self._hooks.publish_unlocked([entry])
        self._hooks.run_replays()
        step = _Registered(self, inst, hook, impl)
        step.token = inst.undo.push_step(step)
        return impl, step.unregister

    def export(self, inst: Instance, name: str, obj: object) -> None:
        lock = self._table.lock
        with lock:
            _check_can_register_unlocked(inst, f"export {name!r}")
            if name in inst.staged_exports or name in inst.exports:
                raise ValueError(f"module {inst.name!r} already exports {name!r}")
            if inst.state is State.COMING:
                inst.own_staged_exports()[name] = obj
            else:
                inst.exports = frozen_mapping({**inst.exports, name: obj})

        inst.undo.push_step(_Exported(lock, inst, name))

    def start_when_live(self, inst: Instance, start: Callable[[], None]) -> None:
        with self._table.lock:
            _check_can_register_unlocked(inst, "start a thread")
            if inst.state is State.COMING:
                inst.own_list("staged_starts").append(start)
                return
        start()

    def taint(self, flag: str, module: str, reason: str) -> None:
        self._journal.taint(flag, module, reason)

    def executor(self) -> concurrent.futures.ThreadPoolExecutor:
        with self._table.lock:
            if self._pool is None:
                self._pool = concurrent.futures.ThreadPoolExecutor(
                    max_workers=4, thread_name_prefix=f"livemod-{self._host_id}-work"
                )
            return self._pool

    def shutdown(self) -> None:
        """At close: drop queued work; running work finishes on its own."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------ dependency edges

    def require(self, inst: Instance, name: str) -> Any:
        try:
            target = self._edge(inst, name, "require")
        except ModuleNotFoundError as exc:
            if self.autoload is None or self._table.find(name) is not None:
                raise DependencyError(str(exc), module=inst.name,
                                      chain=(inst.name, name)) from None
            try:
                self.autoload(name)  # init may modprobe: the operation lock is reentrant
            except ModuleNotFound:
                raise DependencyError(
                    f"module {inst.name!r} requires {name!r}, which is neither loaded nor on "
                    f"the modpath (add its folder to the modpath, or fix the name)",
                    module=inst.name, chain=(inst.name, name)) from None
            target = self._edge(inst, name, "require")
        return Exports(self._table, target.name)

    def import_for(self, inst: Instance, name: str, fromlist: Sequence[str]) -> Any:
        """``__import__`` of a livemod.mods.* (or watched) name by module ``inst`` (its own
        ``__builtins__`` know it: ``_wire``)."""
        return self._import_for(inst, name, fromlist)

    def edge(self, inst: Instance, dep: str, how: str) -> Instance:
        """Record "``dep`` used by ``inst``" and return ``dep``'s current instance."""
        return self._edge(inst, dep, how)

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
        # The package itself, without importing it here (that would be an import cycle).
        livemod = sys.modules[__name__.rpartition(".")[0]]
        return Namespace({"mods": Namespace({parts[0]: self._import_dep(inst, parts[0])})},
                         fallback=livemod)

    def _import_dep(self, inst: Instance, dep: str) -> Any:
        target = self._edge(inst, dep, "import")
        return target.module

    def _edge(self, inst: Instance, dep: str, how: str) -> Instance:
        with self._table.lock:
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
                inst.own_set("uses").add(target.name)
            if how == "import" and target is not inst:
                inst.own_set("bound").add(target.name)
        return target


def _check_can_register_unlocked(inst: Instance, action: str) -> None:
    if inst.state not in (State.COMING, State.LIVE):
        raise ModuleGoing(
            f"module {inst.name!r} is {inst.state.name}; it cannot {action} now",
            module=inst.name,
        )


# The undo steps of registrations: one small object each, called to undo and described only
# when a failure is reported (a closure with its cells, plus the description and the pair,
# was ~500 bytes per registration).


@final
class _Registered:
    """One implementation on one hook: the undo on its module's stack, and its early removal
    (``unregister``: taken off the stack and run, once)."""

    __slots__ = ("hook", "impl", "inst", "registrar", "token")

    def __init__(self, registrar: Registrar, inst: Instance, hook: str, impl: Impl) -> None:
        self.registrar = registrar
        self.inst = inst
        self.hook = hook
        self.impl = impl
        self.token = 0

    def __call__(self) -> None:
        inst, entry = self.inst, (self.hook, self.impl)  # equal to the staged pair
        with self.registrar._table.lock:
            if entry in inst.staged:
                inst.own_list("staged").remove(entry)
            else:
                self.registrar._hooks.remove_unlocked(*entry)

    def unregister(self) -> None:
        if self.inst.undo.discard(self.token) is not None:
            self()

    def describe(self) -> str:
        return f"hook {self.hook!r} <- {self.impl.describe()}"


@final
class _Exported:
    """One export: the undo on its module's stack."""

    __slots__ = ("inst", "lock", "name")

    def __init__(self, lock: threading.Lock, inst: Instance, name: str) -> None:
        self.lock = lock
        self.inst = inst
        self.name = name

    def __call__(self) -> None:
        inst, name = self.inst, self.name
        with self.lock:
            if name in inst.staged_exports:
                inst.own_staged_exports().pop(name, None)
            inst.exports = frozen_mapping({k: v for k, v in inst.exports.items() if k != name})

    def describe(self) -> str:
        return f"export {self.name!r}"
