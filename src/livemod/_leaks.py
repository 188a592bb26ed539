"""Proof that an unloaded module is gone, and who holds it when it is not.

At unload the host takes weak references to the module objects, their functions, classes and
code objects, drops every reference of its own, and collects (a module's namespace and its
functions form cycles, so nothing is freed before ``gc.collect()``). Survivors are explained
by walking ``gc.get_referrers`` backwards to something a person recognises -- a global of
another module, a running thread, a class attribute -- and the walk keeps only *strings*:
keeping the objects would make the report the leak it reports. The walk is bounded in nodes,
in calls to ``gc.get_referrers`` and in time, so a huge heap cannot stall the host. The time
is this thread's CPU time, not the wall clock: on a loaded machine the report then finds the
same chains as on an idle one (a wall-clock budget ran out there before the root was
reached), and its wall time grows with the load as everything else's does. One call
scans the whole heap (on free-threaded builds, every object of every thread), and a single
call cannot be interrupted, so a time budget alone can be overrun by however long the call
that crosses it takes.

On free-threaded CPython 3.13 no verdict is possible (``unverifiable``): once a second thread
has started, CPython makes module-level functions, code objects, classes and module
namespaces immortal, so every unloaded module's code survives whatever holds it. There the
host says so instead of reporting a leak; 3.14 collects these objects again.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import sys
import sysconfig
import threading
import time
import types
import warnings
import weakref
from collections import deque
from dataclasses import dataclass
from typing import Any, Final, final

from . import _sysmodules
from ._owned import attrs_of as _attrs
from ._owned import class_qualname, safe_vars
from ._owned import is_kind as _is
from ._owned import key_words as _key
from ._owned import module_name_of as _module_name
from ._quiesce import Frame, thread_stacks

_log = logging.getLogger("livemod")

__all__ = [
    "Leak", "LeakWatch", "other_thread_collecting", "state", "unverifiable",
    "warn_if_unverifiable", "watch_collections",
]

_MAX_REFS: Final = 2000
_MAX_DEPTH: Final = 8
_MAX_NODES: Final = 5000
_NO_ROOT: Final = "(no recognisable root found within the search bound)"
#: Seconds of CPU for a report explained again when asked for (LeakWatch.to_leak).
_ASKED_BUDGET: Final = 5.0
_OUTSIDE_GC: Final = "(held outside the GC)"


#: Calls to ``gc.get_referrers`` one ``explain()`` may make (each scans the whole heap).
_MAX_REFERRER_CALLS: Final = 300


def _why_unverifiable() -> str | None:
    free_threaded = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
    if free_threaded and sys.version_info < (3, 14):
        tag = f"{sys.version_info.major}.{sys.version_info.minor}t"
        return (f"cannot be verified on this interpreter (functions and classes are immortal "
                f"on {tag})")
    return None


_UNVERIFIABLE: Final = _why_unverifiable()


def unverifiable() -> str | None:
    """Why the leak check can give no verdict on this interpreter, or None where it can.

    On free-threaded 3.13 (3.13t) CPython immortalises functions, code objects, classes and
    module namespaces once a second thread has started (they use deferred reference counting,
    which that release cannot undo), so unloaded code never dies there. That is neither a
    leak nor a pass: the host reports this sentence instead of a verdict.
    """
    return _UNVERIFIABLE


def state(enabled: bool) -> str:
    """The leak check in one word or sentence: ``on``, ``off``, or why it cannot be."""
    if not enabled:
        return "off"
    return _UNVERIFIABLE or "on"


def warn_if_unverifiable(enabled: bool, stacklevel: int) -> None:
    """Say (once per caller's line, as warnings do) that an empty ``leaks()`` proves nothing."""
    if enabled and _UNVERIFIABLE is not None:
        warnings.warn(f"livemod: the leak check {_UNVERIFIABLE}; leaks() is empty because no "
                      f"verdict is possible here", RuntimeWarning, stacklevel=stacklevel)


@final
class _Calls:
    """What is left of one ``explain()``'s allowance of ``gc.get_referrers`` calls."""

    __slots__ = ("left",)

    def __init__(self, allowed: int) -> None:
        self.left = allowed

    def take(self) -> bool:
        if self.left <= 0:
            return False
        self.left -= 1
        return True


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

    __slots__ = (
        "asked", "atexit_notes", "chains", "exit_thread", "files", "name", "names", "native",
        "refs", "unloaded_at", "version",
    )

    def __init__(
        self,
        name: str,
        version: str,
        refs: list[tuple[str, weakref.ref[Any]]],
        names: dict[str, str],
    ) -> None:
        self.name = name
        self.version = version
        self.refs = refs
        self.names = names  # private module name -> the name a person knows
        self.files: frozenset[str] = frozenset()  # the module's source files
        self.atexit_notes: list[tuple[str, str]] = []  # (qualname, where) registered directly
        self.unloaded_at = time.time()
        self.chains: tuple[str, ...] = ()
        self.native: tuple[str, ...] = ()  # its extension modules (see held_outside_gc)
        self.asked = False  # explained again with _ASKED_BUDGET (see to_leak)
        # The thread exit ran on: what exit left in its thread-local state and context dies
        # only when it ends, so the judge joins it first (``_exit_runner``).
        self.exit_thread: threading.Thread | None = None

    def survivors(self) -> list[str]:
        return [desc for desc, ref in self.refs if ref() is not None]

    def explain(self, budget: float = 0.5) -> None:
        """Compute referrer chains for the survivors (once, within ``budget`` seconds).

        Never raises: a report that fails says so in its chains (the unload that asked for
        it has completed either way)."""
        try:
            self._explain(budget)
        except Exception as exc:
            _log.exception("module %r: the leak report failed", self.name)
            self.chains = (f"(the leak report failed: {type(exc).__name__}; see the log)",)

    def _explain(self, budget: float) -> None:
        if self._explain_by_registries(budget / 2):
            return
        self._explain_by_walk(budget)

    def _explain_by_registries(self, budget: float) -> bool:
        """The known registries first: cheap, and they say in words who holds the module."""
        from ._leak_registries import explain

        found = explain(self.name, self.names, self.files, budget)
        if found:
            self.chains = tuple(found)
        return bool(found)

    def _explain_by_walk(self, budget: float) -> None:
        deadline = time.thread_time() + budget
        calls = _Calls(_MAX_REFERRER_CALLS)
        chains: list[str] = []
        seen_roots: set[str] = set()
        # Explain modules and classes last: a function's chain is usually the one that says
        # who holds the module.
        ordered = sorted(self.refs, key=lambda r: r[0].endswith("(module)"))
        for desc, ref in ordered:
            if time.thread_time() > deadline or len(chains) >= 5 or calls.left <= 0:
                break
            obj = ref()
            if obj is None:
                continue
            walk = _Walk(self.names, self.files, deadline, calls)
            chain = walk.chain(obj, desc.rsplit(" (", 1)[0])
            if chain.endswith(_NO_ROOT):
                # atexit keeps its callbacks where the garbage collector cannot see them.
                qualname = obj.__qualname__ if type(obj) is types.FunctionType else None
                for noted, where in self.atexit_notes:
                    if noted == qualname:
                        chain = (f"{desc.rsplit(' (', 1)[0]} <- atexit callback registered "
                                 f"directly at {where} (use mod.atexit to have it undone)")
            del obj
            root = chain.rsplit(" <- ", 1)[-1]
            if root not in seen_roots:  # one chain per root says it all
                seen_roots.add(root)
                chains.append(chain)
        explained = [c for c in chains if not c.endswith(_NO_ROOT)]
        if not explained and self.native:
            from ._leak_registries import outside_gc

            chains = [outside_gc(c, self.native, _NO_ROOT, _OUTSIDE_GC) for c in chains]
        self.chains = tuple(explained or chains[:1])

    def held_outside_gc(self) -> bool:
        """Whether (after ``explain``) every chain ends in native code of the module: what
        only a native library's statics hold is invisible to the garbage collector, and
        the library stays mapped for the life of the process. Not a failed check."""
        return bool(self.chains) and all(c.endswith(_OUTSIDE_GC) for c in self.chains)

    def to_leak(self) -> Leak:
        """The public record (``host.leaks()``, ``livemod leaks``). If the unload's report
        found no root within its bound, it is explained once more with a larger one: the
        unload keeps its report short to keep rmmod fast, while someone asking can wait
        (in a large heap each ``gc.get_referrers`` call scans all of it, and half a second
        of CPU was a few dozen calls)."""
        if not self.asked and self.chains and all(c.endswith(_NO_ROOT) for c in self.chains):
            self.asked = True
            self.explain(_ASKED_BUDGET)
        return Leak(self.name, self.version, self.unloaded_at, tuple(self.survivors()), self.chains)


#: Threads inside a garbage collection right now. ``gc.collect()`` returns at once when
#: another thread is collecting, so a leak check must know whether its collection ran.
_collecting: set[int] = set()


def _gc_phase(phase: str, info: dict[str, int]) -> None:
    if phase == "start":
        _collecting.add(threading.get_ident())
    else:
        _collecting.discard(threading.get_ident())


def watch_collections() -> None:
    """Start tracking which threads are collecting (once per process)."""
    if _gc_phase not in gc.callbacks:
        gc.callbacks.append(_gc_phase)


def other_thread_collecting() -> bool:
    return bool(_collecting - {threading.get_ident()})


def _where(frame: types.FrameType | None) -> str:
    if frame is None:
        return "?"
    code = frame.f_code
    return f"{os.path.basename(code.co_filename)}:{frame.f_lineno} {code.co_name}"


def _short(obj: Any) -> str:
    if _is(obj, types.FunctionType):
        return f"function {obj.__qualname__}"
    if _is(obj, types.ModuleType):
        return f"module {_module_name(obj)}"
    if _is(obj, type):
        return f"class {class_qualname(obj)}"
    if _is(obj, BaseException):
        return f"{class_qualname(type(obj))} exception"
    if _is(obj, types.CoroutineType):
        return f"coroutine {obj.__qualname__} (at {_where(obj.cr_frame)})"
    if _is(obj, threading.local):
        return "threading.local object"
    return f"{class_qualname(type(obj))} object"


def _is_thread_local_key(key: object) -> bool:
    """Whether ``key`` keys one thread's slot of a ``threading.local``.

    The slots live in a dict of the local object: keyed by a weak reference to a
    per-thread dummy up to 3.12, by the ``_thread._localdummy`` itself from 3.13 on. Only
    ``type()`` is asked: nothing of the key's own code runs.
    """
    kind = type(key)
    if issubclass(kind, weakref.ref):
        return True
    return kind.__module__ == "_thread" and kind.__name__ == "_localdummy"


def _step(parent: Any, child: Any, names: dict[str, str]) -> str:
    """How ``parent`` refers to ``child``, in words."""
    if _is(parent, dict):
        owner = dict.get(parent, "__name__")
        if _is(owner, str) and owner in names and dict.get(parent, "__builtins__") is not None:
            key = next((k for k, v in dict.items(parent) if v is child), "?")
            return f"global {_key(key)} of unloaded {names[owner]}"
        for key, value in dict.items(parent):
            if value is child:
                if _is_thread_local_key(key):
                    return "thread-local storage"
                return f"dict[{_key(key)}]"
        return "dict key"
    if type(parent) is list or type(parent) is tuple:  # exact: a subclass __iter__ is module code
        for index, value in enumerate(parent):
            if value is child:
                return f"{type(parent).__name__}[{index}]"
    if _is(parent, set | frozenset):
        return f"{class_qualname(type(parent))} member"
    if _is(parent, types.CellType):
        return "closure cell"
    if _is(parent, types.FunctionType):
        if parent.__globals__ is child:
            return f"function {parent.__qualname__} (its globals)"
        return f"function {parent.__qualname__}"
    if _is(parent, types.MethodType):
        func = parent.__func__
        return f"bound method {func.__qualname__ if _is(func, types.FunctionType) else '?'}"
    if _is(parent, types.FrameType):
        return f"frame {_where(parent)}"
    if _is(parent, types.TracebackType):
        return "traceback"
    return _short(parent)


def _telling(frames: list[Frame], files: frozenset[str]) -> str:
    """Where a thread is, said by its innermost frame in the unloaded module's files (where
    it is stuck), else by its innermost frame."""
    for filename, line, function in frames:
        if filename in files:
            return f"{os.path.basename(filename)}:{line} {function}"
    if frames:
        filename, line, function = frames[0]
        return f"{os.path.basename(filename)}:{line} {function}"
    return "no frame"


def _root(
    obj: Any, child: Any, stacks: dict[int, list[Frame]], files: frozenset[str]
) -> str | None:
    """A description if ``obj`` is something a person recognises as a holder, else None."""
    # Attributes are read through the stdlib classes' own descriptors: a module's subclass
    # may have turned them into properties.
    if _is(obj, threading.Thread):
        frames = stacks.get(threading.Thread.ident.fget(obj) or -1)  # type: ignore[attr-defined]
        state = f"stack: {_telling(frames, files)}" if frames else "not running"
        return f"thread {threading.Thread.name.fget(obj)!r} ({state})"  # type: ignore[attr-defined]
    if _is(obj, asyncio.Task):
        task: Any = asyncio.Task
        stack = task.get_stack(obj, limit=1)
        at = _where(stack[-1]) if stack else "no frame"
        done = "done" if task.done(obj) else "pending"
        return f"asyncio task {task.get_name(obj)!r} ({done}, at {at})"
    if _is(obj, logging.Logger):
        attrs = _attrs(obj)
        what = ("handler" if child is attrs.get("handlers") else
                "filter" if child is attrs.get("filters") else "attr")
        return f"logging {what} on logger {attrs.get('name')!r}"
    return None


class _Walk:
    """One bounded breadth-first search backwards from a survivor to a recognisable root."""

    def __init__(
        self, names: dict[str, str], files: frozenset[str], deadline: float,
        calls: _Calls | None = None,
    ) -> None:
        self.names = names
        self.files = files
        self.deadline = deadline
        self.calls = calls if calls is not None else _Calls(_MAX_REFERRER_CALLS)
        self.modules = {
            id(ns): n for n, ns in ((n, safe_vars(m)) for n, m in _sysmodules.snapshot().items())
            if type(ns) is dict
        }
        # Other threads' stacks are read by _quiesce.thread_stacks (see there why it is
        # safe). A frame met in the walk is placed in a thread by its file and function.
        self.stacks = thread_stacks()
        self.thread_of: dict[tuple[str, str], str] = {}
        current = threading.get_ident()
        threads = {t.ident: t.name for t in threading.enumerate()}
        for ident, frames in self.stacks.items():
            if ident == current:
                continue
            desc = f"thread {threads.get(ident, ident)!r} (stack: {_telling(frames, files)})"
            for filename, _line, function in frames:
                self.thread_of.setdefault((filename, function), desc)

    def chain(self, target: Any, start: str) -> str:
        """The referrer chain from ``target`` to a root, or as far as the holders go."""
        # First look only outside the unloaded module's own namespaces: a module refers to
        # its own functions, which explains nothing. Then, if that finds no root, anywhere.
        found, outside = self._search(target, start, internal=False)
        if found:
            return " <- ".join(outside)
        found, anywhere = self._search(target, start, internal=True)
        if found:
            return " <- ".join(anywhere)
        # No root: still show how far the holders go (a list held by a local, say).
        best = outside if len(outside) > 1 else anywhere
        return " <- ".join((*best, _NO_ROOT))

    def _search(self, target: Any, start: str, *, internal: bool) -> tuple[bool, tuple[str, ...]]:
        own = sys._getframe()
        ignore = {id(own), id(own.f_back)}
        queue: deque[tuple[Any, tuple[str, ...]]] = deque([(target, (start,))])
        ignore.add(id(queue))
        visited = {id(target)}
        nodes = 0
        longest: tuple[str, ...] = (start,)
        try:
            while queue and nodes < _MAX_NODES and time.thread_time() < self.deadline:
                obj, path = queue.popleft()
                if len(path) > _MAX_DEPTH:
                    continue
                if len(path) > len(longest):
                    longest = path
                if not self.calls.take():
                    break  # each call scans the whole heap: the time check alone can overrun
                referrers = gc.get_referrers(obj)
                ignore.add(id(referrers))
                for seen, parent in enumerate(referrers):
                    if seen % 1024 == 1023 and time.thread_time() > self.deadline:
                        break  # a huge fan-in must not outrun the budget
                    pid = id(parent)
                    if pid in visited or pid in ignore:
                        continue
                    if not internal and self._is_unloaded_namespace(parent):
                        continue
                    visited.add(pid)
                    nodes += 1
                    found = self._recognise(parent, obj)
                    if found is not None:
                        return True, (*path, found)
                    step = _step(parent, obj, self.names)
                    if path[-1] == step == "traceback":
                        queue.append((parent, path))  # a traceback chain reads as one step
                    else:
                        queue.append((parent, (*path, step)))
                del referrers
            return False, longest
        finally:
            queue.clear()
            del own

    def _is_unloaded_namespace(self, obj: Any) -> bool:
        return (
            _is(obj, dict)
            and dict.get(obj, "__name__") in self.names
            and dict.__contains__(obj, "__builtins__")
        )

    def _recognise(self, parent: Any, child: Any) -> str | None:
        pid = id(parent)
        if pid in self.modules and self.modules[pid] not in self.names:
            key = next((k for k, v in dict.items(parent) if v is child), "?")
            return f"global {_key(key)} of module {self.modules[pid]}"
        if _is(parent, types.FrameType):
            code = parent.f_code
            running = self.thread_of.get((code.co_filename, code.co_name))
            if running is not None:
                return running
        return _root(parent, child, self.stacks, self.files)
