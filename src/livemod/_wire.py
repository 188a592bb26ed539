"""Binding a module instance's import wiring to its host (see ``_wiring`` for the design).

``wire`` builds the per-module ``__builtins__`` before the module's body runs; ``unwire``
takes the wiring down at unload (or a failed load) and removes any public ``sys.modules``
entry the module's code inserted for itself -- livemod never inserts one.
"""

from __future__ import annotations

import hashlib
import os
import sys
import threading
import types
import weakref
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final, final

from . import _patches, _provenance, _scrub, _sysmodules, _trampolines, _wiring
from ._instance import Instance
from ._nsget import ns_get
from ._owned import Owner, among, mro
from ._state import State

if TYPE_CHECKING:
    from ._journal import Journal
    from ._registrar import Registrar
    from ._table import ModuleTable

__all__ = ["import_names", "settle", "unwire", "wire"]


def import_names(inst: Instance) -> tuple[str, ...]:
    """The public top-level names a module is imported by: its file or folder name (what
    its own absolute imports say) and, if different, its manifest name."""
    info = inst.info
    stem = os.path.basename(info.path.rstrip(os.sep))
    if not info.is_package:
        stem = os.path.splitext(stem)[0]
    names = [stem] if stem.isidentifier() else []
    if info.name not in names:
        names.append(info.name)
    return tuple(names)


def wire(table: ModuleTable, registrar: Registrar, journal: Journal,
         inst: Instance) -> dict[str, Any]:
    """Build ``inst``'s wiring and return the ``__builtins__`` its namespaces run with."""
    _wiring.install()
    _trampolines.install()  # what module code registers directly is undone at unload
    inst.scrub_before = _scrub.baseline()  # the slots as they were before its body runs
    inst.patches = patches = _patches.Patches()  # what it replaces in installed modules
    dep_of: dict[str, str] = {}  # public top-level name -> dependency's module name
    with table.lock:
        for req in inst.info.depends:
            dep = table.usable_unlocked(req.name)
            for top in import_names(dep) if dep is not None else (req.name,):
                dep_of.setdefault(top, req.name)
    side = _Side(weakref.ref(inst), inst.name, dep_of or _NO_DEPS, table, registrar, journal,
                 patches)
    wiring = _wiring.Wiring(inst.name, inst.info.path, inst.private_name, import_names(inst),
                            tuple(dep_of), side)
    inst.wiring = wiring
    _wiring.register(wiring)
    builtins = _wiring.module_builtins(wiring)
    # Who made a call is one lookup on the caller frame's builtins (_provenance).
    _provenance.mark(builtins, side)  # called with a frame: the instance, if alive
    return builtins


_NO_DEPS: Final[dict[str, str]] = {}  # shared, never written: most modules declare none


@final
class _Side:
    """The host's side of one module's wiring (``_wiring.WiringHost``).

    One small object per module, its bound methods the callbacks (a closure per callback
    and their cells were ~1.8 KiB a module). It holds the instance weakly: the wiring and
    the builtins outlive the record in any function the module left behind, and must never
    keep it alive.
    """

    __slots__ = ("dep_of", "inst_name", "inst_ref", "journal", "patches", "registrar", "table")

    def __init__(self, inst_ref: weakref.ref[Instance], inst_name: str, dep_of: dict[str, str],
                 table: ModuleTable, registrar: Registrar, journal: Journal,
                 patches: _patches.Patches) -> None:
        self.inst_ref = inst_ref
        self.inst_name = inst_name
        self.dep_of = dep_of
        self.table = table
        self.registrar = registrar
        self.journal = journal
        self.patches = patches

    def live(self) -> Instance:
        i = self.inst_ref()
        if i is None:
            raise ImportError(f"module {self.inst_name!r} is unloaded; its imports are not "
                              f"wired", name=self.inst_name)
        return i

    def __call__(self, frame: object) -> Instance | None:
        """The provenance resolver (``_provenance.mark``): itself, not a bound method."""
        return self.inst_ref()

    def resolve_dep(self, top: str) -> str:
        return self.registrar.edge(self.live(), self.dep_of[top], "import").private_name

    def taken(self, top: str) -> str | None:
        i = self.live()
        table = self.table
        with table.lock:
            for other in table.names.values():
                if other is not i and top in import_names(other):
                    return other.name
        return None

    def metadata(self, top: str) -> tuple[str, str, str] | None:
        target: Instance | None = self.live()
        if top in self.dep_of:
            with self.table.lock:
                target = self.table.usable_unlocked(self.dep_of[top])
        if target is None:
            return None
        return target.info.name, target.info.version, target.info.source_file

    def on_mixed(self, top: str) -> None:
        i = self.live()
        if top in i.mixed_copies:
            return
        i.own_set("mixed_copies").add(top)
        self.journal.taint("mixed-copies", i.name,
                           f"module {i.name!r} imported {top!r} in a way livemod cannot wire "
                           f"(native code, or a direct builtins.__import__), and the "
                           f"installed copy loaded beside livemod's")

    def note(self, name: str, fromlist: Sequence[str] | None) -> None:
        self.patches.note(name, fromlist)

    def livemod_import(self, name: str, fromlist: tuple[str, ...]) -> Any:
        i = self.live()
        if i.state is State.GONE:
            raise ImportError(f"{name}: module {i.name!r} is unloaded", name=name)
        return self.registrar.import_for(i, name, fromlist)


def settle(inst: Instance) -> None:
    """The load is done (body and init): keep what it replaced in installed modules' namespaces
    with its own objects, to be put back at unload (``_patches``)."""
    if inst.patches is not None:
        owner = Owner(inst.name, inst.private_name, inst.namespace_ids, inst.files)
        inst.patches.settle(owner.owns)


def unwire(inst: Instance, event: Callable[..., None]) -> list[str]:
    """Take ``inst``'s wiring down; remove public ``sys.modules`` entries its code inserted
    for its own modules, and report them. Returns the module's own private names found
    (for ``_loader.remove_modules``)."""
    wiring = inst.wiring
    if wiring is not None:
        _wiring.unregister(wiring)
    private = inst.private_name
    below = private + "."

    def own(key: object) -> bool:  # its private names: _loader.remove_modules takes those
        return type(key) is str and (key == private or key.startswith(below))

    removed = []
    try:
        snap = _sysmodules.snapshot()
        items = _sysmodules.unknown(snap, private)  # its own keys among them
        for key in _inserted(items, private, inst.namespace_ids):
            if not own(key) and sys.modules.get(key) is snap[key]:
                del sys.modules[key]
                removed.append(key)
    finally:
        _sysmodules.drop_namespaces(inst.namespace_ids)  # after the look: see _sysmodules
    if removed:
        event("sys-modules-removed", inst.name,
                    f"removed sys.modules entries the module inserted itself: "
                    f"{', '.join(sorted(removed))}", names=tuple(sorted(removed)))
    return [k for k, _ in items if own(k)]


_MODULE: Final = types.ModuleType


def _inserted(items: list[tuple[Any, Any]], private: str, ids: frozenset[int]) -> list[Any]:
    """The keys whose module is one of the module's: one of its namespaces (``ids``), or
    named under ``private``; ``items`` are the entries of ``sys.modules`` not known to be
    foreign (``_sysmodules.unknown``: at most unloads, its private names and little else).

    Reading module objects is bound by memory, not by the interpreter: so one pass that
    touches each plain module once (its namespace read through ``ModuleType``'s own
    ``__dict__`` and its name with ``dict.get``: no module code runs) keeps only the
    candidates, and those -- its own entries, module subclasses, other objects, odd names
    -- are then looked at one by one (never ``isinstance``, never ``getattr``).
    """
    found = []
    for key, value in [(k, v) for k, v in items if type(v) is not _MODULE
                       or id(d := v.__dict__) in ids or type(n := ns_get(d, "__name__")) is not str
                       or n.startswith(private)]:
        if type(value) is _MODULE:
            owner = value.__dict__
        elif among(_MODULE, mro(type(value))):  # a subclass of ModuleType (a lazy module)
            owner = object.__getattribute__(value, "__dict__")
        else:
            continue  # not a module at all
        if type(owner) is dict and (id(owner) in ids
                                    or _ours(dict.get(owner, "__name__"), private)):
            found.append(key)
    return found


def _ours(name: object, private: str) -> bool:
    # str's own methods: a str subclass's __eq__ or startswith never runs.
    if not among(str, mro(type(name))):
        return False
    text: str = name  # type: ignore[assignment]
    return str.startswith(text, private) and (
        str.__len__(text) == len(private) or str.startswith(text, private + "."))


_tags_lock = threading.Lock()  # protects: _tags_in_use
_tags_in_use: set[str] = set()


def host_tag(name: str | None, host_id: int) -> str:
    """The private-name tag of a host (``livemod.mods.<tag>.<module>``).

    From the host's name, not a per-process counter, so every worker that names its host
    alike gives a module the same private name (a pickle made in one loads in another). An
    unnamed host uses its sequence number; a second host of the same name in one process
    gets its sequence number appended.
    """
    if name is None:
        tag = f"_h{host_id}"
    else:
        tag = "_h" + hashlib.blake2b(name.encode(), digest_size=4).hexdigest()
    with _tags_lock:
        if tag in _tags_in_use:
            tag = f"{tag}x{host_id}"
        _tags_in_use.add(tag)
    return tag
