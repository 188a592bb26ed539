"""Proof that an unloaded module is gone, and who holds it when it is not.

At unload the host takes weak references to the module objects, their functions, classes and
code objects, drops every reference of its own, and collects (a module's namespace and its
functions form cycles, so nothing is freed before ``gc.collect()``). Survivors are explained
by walking ``gc.get_referrers`` backwards to something a person recognises -- a global of
another module, a running thread, a class attribute -- and the walk keeps only *strings*:
keeping the objects would make the report the leak it reports. The walk is bounded in nodes
and time so a huge heap cannot stall the host.
"""

from __future__ import annotations

import contextlib
import gc
import sys
import threading
import time
import types
import weakref
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final, final

__all__ = ["Leak", "LeakWatch", "watch"]

_MAX_REFS: Final = 2000
_MAX_DEPTH: Final = 8
_MAX_NODES: Final = 5000


@final
@dataclass(frozen=True, slots=True)
class Leak:
    """An unloaded module whose objects are still alive, and why.

    Attributes:
        name, version: the module.
        unloaded_at: ``time.time()`` of its unload.
        survivors: what is still alive, e.g. ``"greet.handle (function)"``.
        chains: one referrer chain per survivor explained, e.g.
            ``"greet.handle <- list[3] <- global 'handlers' of module app"``.
    """

    name: str
    version: str
    unloaded_at: float
    survivors: tuple[str, ...]
    chains: tuple[str, ...]

    def __str__(self) -> str:
        lines = [f"{self.name} {self.version}: {len(self.survivors)} object(s) still alive"]
        lines += [f"  {c}" for c in self.chains]
        return "\n".join(lines)


@final
class LeakWatch:
    """Weak references to everything of one unloaded instance."""

    __slots__ = ("chains", "name", "refs", "unloaded_at", "version")

    def __init__(self, name: str, version: str, refs: list[tuple[str, weakref.ref[Any]]]) -> None:
        self.name = name
        self.version = version
        self.refs = refs
        self.unloaded_at = time.time()
        self.chains: tuple[str, ...] = ()

    def survivors(self) -> list[str]:
        return [desc for desc, ref in self.refs if ref() is not None]

    def explain(self, budget: float = 0.5) -> None:
        """Compute referrer chains for the survivors (once, within ``budget`` seconds)."""
        deadline = time.monotonic() + budget
        chains: list[str] = []
        seen_roots: set[str] = set()
        # Explain modules and classes last: a function's chain is usually the one that says
        # who holds the module.
        ordered = sorted(self.refs, key=lambda r: r[0].endswith("(module)"))
        for desc, ref in ordered:
            if time.monotonic() > deadline or len(chains) >= 5:
                break
            obj = ref()
            if obj is None:
                continue
            chain = _chain(obj, desc, deadline)
            del obj
            root = chain.rsplit(" <- ", 1)[-1]
            if chain and root not in seen_roots:  # one chain per root says it all
                seen_roots.add(root)
                chains.append(chain)
        self.chains = tuple(chains)

    def to_leak(self) -> Leak:
        return Leak(self.name, self.version, self.unloaded_at, tuple(self.survivors()), self.chains)


def watch(name: str, version: str, modules: Iterable[types.ModuleType]) -> LeakWatch:
    """Take weak references to the modules and what they define (call before unloading)."""
    modules = list(modules)
    ids = {id(vars(m)) for m in modules}
    names = {m.__name__ for m in modules}
    refs: list[tuple[str, weakref.ref[Any]]] = []
    seen: set[int] = set()

    def add(desc: str, obj: Any) -> None:
        if id(obj) in seen or len(refs) >= _MAX_REFS:
            return
        seen.add(id(obj))
        with contextlib.suppress(TypeError):  # not weak-referenceable: cannot be watched
            refs.append((desc, weakref.ref(obj)))

    def user_name(private: str) -> str:
        return name + private[len(modules[0].__name__):] if modules else private

    for m in modules:
        short = user_name(m.__name__)
        add(f"{short} (module)", m)
        for value in list(vars(m).values()):
            if isinstance(value, types.FunctionType) and id(value.__globals__) in ids:
                add(f"{short}.{value.__qualname__} (function)", value)
                add(f"{short}.{value.__qualname__} (code)", value.__code__)
            elif isinstance(value, type) and value.__module__ in names:
                add(f"{short}.{value.__qualname__} (class)", value)
                for attr in list(vars(value).values()):
                    fn = getattr(attr, "__func__", attr)
                    if isinstance(fn, types.FunctionType) and id(fn.__globals__) in ids:
                        add(f"{short}.{fn.__qualname__} (function)", fn)
    return LeakWatch(name, version, refs)


def _short(obj: Any) -> str:
    if isinstance(obj, types.FunctionType):
        return f"function {obj.__qualname__}"
    if isinstance(obj, types.ModuleType):
        return f"module {obj.__name__}"
    if isinstance(obj, type):
        return f"class {obj.__qualname__}"
    return f"{type(obj).__qualname__} object"


def _step(parent: Any, child: Any) -> str:
    """How ``parent`` refers to ``child``, in words."""
    if isinstance(parent, dict):
        for key, value in parent.items():
            if value is child:
                return f"dict[{key!r}]"
        return "dict key"
    if isinstance(parent, list | tuple):
        for index, value in enumerate(parent):
            if value is child:
                return f"{type(parent).__name__}[{index}]"
    if isinstance(parent, set | frozenset):
        return f"{type(parent).__name__} member"
    if isinstance(parent, types.CellType):
        return "closure cell"
    if isinstance(parent, types.MethodType):
        return f"bound method {parent.__func__.__qualname__}"
    if isinstance(parent, types.FrameType):
        return f"frame {parent.f_code.co_filename.rsplit('/', 1)[-1]}:{parent.f_lineno}"
    return _short(parent)


def _roots() -> tuple[dict[int, str], dict[int, str]]:
    modules = {
        id(vars(m)): name
        for name, m in list(sys.modules.items())
        if isinstance(m, types.ModuleType)
    }
    names = {t.ident: t.name for t in threading.enumerate()}
    frames: dict[int, str] = {}
    for ident, frame in sys._current_frames().items():
        if ident == threading.get_ident():
            continue
        code = frame.f_code
        top = f"{code.co_filename.rsplit('/', 1)[-1]}:{frame.f_lineno} {code.co_name}"
        f: types.FrameType | None = frame
        while f is not None:
            frames[id(f)] = f"thread {names.get(ident, ident)!r} (stack: {top})"
            f = f.f_back
    return modules, frames


def _chain(target: Any, desc: str, deadline: float) -> str:
    """Breadth-first search backwards from ``target`` to a recognisable root."""
    modules, frames = _roots()
    own = sys._getframe()
    ignore = {id(own), id(own.f_back)}
    start = desc.rsplit(" (", 1)[0]
    queue: deque[tuple[Any, tuple[str, ...]]] = deque([(target, (start,))])
    ignore.add(id(queue))
    visited = {id(target)}
    nodes = 0
    try:
        while queue and nodes < _MAX_NODES and time.monotonic() < deadline:
            obj, path = queue.popleft()
            if len(path) > _MAX_DEPTH:
                continue
            referrers = gc.get_referrers(obj)
            ignore.add(id(referrers))
            for parent in referrers:
                pid = id(parent)
                if pid in visited or pid in ignore:
                    continue
                visited.add(pid)
                nodes += 1
                if pid in modules:
                    key = next((k for k, v in parent.items() if v is obj), "?")
                    return " <- ".join((*path, f"global {key!r} of module {modules[pid]}"))
                if pid in frames:
                    return " <- ".join((*path, frames[pid]))
                queue.append((parent, (*path, _step(parent, obj))))
            del referrers
        return " <- ".join((start, "(no recognisable root found within the search bound)"))
    finally:
        queue.clear()
        del own
