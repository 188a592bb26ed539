"""A hook's implementations (``Impl``) and one immutable generation of them (``_Snapshot``).

Split from ``_hooks`` (which has the design essay: snapshots, read-side sections, retiring).
A snapshot is made at every publish, so what it derives from its implementations (the
plain/wrapper split, their functions, how many are coroutines, their common signature) is
carried over from the snapshot it grew from when only plain implementations were added:
one insmod onto a hook with 1,000 implementations then copies two tuples, and does not pay
a pass over all of them per field. The owners, which only an unload asks for, are made when
asked.
"""

from __future__ import annotations

import inspect
import itertools
import operator
import types
from collections.abc import Callable, Coroutine
from typing import Any, Final, final

from . import _specs

__all__ = ["Impl"]


@final
class Impl:
    """One implementation registered on a hook by one module instance."""

    __slots__ = ("args", "fn", "hist", "is_async", "owner", "owner_name", "priority", "seq",
                 "shape", "wrapper")

    def __init__(
        self, fn: Callable[..., Any], *, owner: int, owner_name: str, priority: int, seq: int,
        wrapper: bool = False,
    ) -> None:
        self.fn = fn
        self.owner = owner  # instance id, never the instance: snapshots must not keep it alive
        self.owner_name = owner_name
        self.priority = priority
        self.seq = seq
        self.wrapper = wrapper
        self.is_async = inspect.iscoroutinefunction(fn)
        self.shape = _specs.shape_key(fn)  # its signature, as first seen (see _plan)
        self.args: str | None = None  # how a spec'd hook calls it (source); None: as given
        self.hist = 0  # remembered historic calls already given (or claimed for) it

    def sort_key(self) -> tuple[int, int]:
        # Higher priority first; equal priority in registration order (load order).
        return (-self.priority, self.seq)

    def describe(self) -> str:
        return f"{self.owner_name}:{getattr(self.fn, '__qualname__', repr(self.fn))}"


@final
class _Snapshot:
    """One immutable generation of a hook: its implementations and their dispatchers."""

    __slots__ = ("_owners", "acall", "call", "dunder", "fns", "impls", "n_async", "plain",
                 "readers", "shape", "wraps")

    impls: tuple[Impl, ...]
    plain: tuple[Impl, ...]  # the implementations that are not wrappers
    wraps: tuple[Impl, ...]
    fns: tuple[Any, ...]  # the functions of ``plain``, in order
    n_async: int  # how many implementations are coroutine functions
    shape: object  # the shape key all have; None if they differ; _NO_IMPLS if none

    def __init__(self, impls: tuple[Impl, ...],
                 grown: tuple[_Snapshot, tuple[Any, ...], list[Impl]] | None = None) -> None:
        # Every publish makes one, so a hook with 1,000 implementations must not pay a pass
        # over them per field. ``grown`` = (the snapshot it grew from, the functions of
        # ``impls``, the implementations added: none a wrapper, and it had none): what is
        # derived from its implementations is carried over and updated by the few added.
        # Otherwise each is one C-level pass (map, compress).
        self.impls = impls
        self._owners: frozenset[int] | None = None  # made when asked: see owners
        if grown is not None:
            old, self.fns, added = grown
            self.plain, self.wraps = impls, ()
            self.n_async = old.n_async + sum(map(_IS_ASYNC, added))
            shape: object = old.shape
            for impl in added:
                shape = impl.shape if shape is _NO_IMPLS else shape if shape == impl.shape \
                    else None
            self.shape = shape
        else:
            wrapper = list(map(_WRAPPER, impls))
            if True in wrapper:
                self.plain = tuple(itertools.compress(impls, map(operator.not_, wrapper)))
                self.wraps = tuple(itertools.compress(impls, wrapper))
            else:
                self.plain, self.wraps = impls, ()
            self.fns = tuple(map(_FN, self.plain))
            self.n_async = sum(map(_IS_ASYNC, impls))
            shapes = set(map(_SHAPE, impls))
            self.shape = shapes.pop() if len(shapes) == 1 else None if shapes else _NO_IMPLS
        self.readers: list[None] = []
        self.call: Callable[..., Any] = _empty_list
        self.dunder: Callable[..., Any] = _empty_dunder
        self.acall: Callable[..., Coroutine[Any, Any, Any]] = _empty_acall

    @property
    def owners(self) -> frozenset[int]:
        """The ids of the modules with an implementation here; made when first asked (an
        unload asks), not at every publish. Racing makers make equal sets."""
        found = self._owners
        if found is None:
            found = self._owners = frozenset(map(_OWNER, self.impls))
        return found

    def refusal(self, hook: str) -> TypeError:
        owners = ", ".join(sorted({i.owner_name for i in self.impls if i.is_async}))
        return TypeError(f"hook {hook!r} has coroutine implementations (from {owners}); "
                         f"call it with 'await hook.acall(...)'")

    def scrub(self) -> None:
        """Drop the references to the implementations (and so to their modules).

        Only for a retired snapshot seen with no readers: a caller that still holds its
        dispatcher fails the re-check before it could reach an implementation, so nothing
        reads these again. Without this, a thread paused in a stale dispatcher keeps an
        unloaded module alive and the leak check reports it.
        """
        self.impls = self.plain = self.wraps = self.fns = ()
        self._owners = _NO_OWNERS
        for name, cell in _cells(self):
            if name == "_lm_fns":
                set_cell(cell, [()])
            elif name.startswith(("_lm_f", "_lm_w")) and name[5:].isdigit():
                set_cell(cell, None)


def set_cell(cell: Any, value: object) -> None:
    """Rebind a closure cell that other threads may be reading, safely on every build.

    Not ``cell.cell_contents = value``: on 3.13's free-threaded build that setter swaps the
    pointer and drops the old value without the cell's lock, while a dispatcher's
    ``LOAD_DEREF`` reads and increfs under it (CPython gh-127271; 3.13.5 still has it). A
    reader in its ``finally`` could then take a reference to a freed object: the retired
    snapshot's plain ``leave`` that ``_arm_wakeup`` swaps out is referenced by that cell
    alone, and if its memory is reused (the next snapshot's ``leave`` is the same size),
    the reader pops another counter than its own and an unload waits out its timeout. A
    ``STORE_DEREF`` (``PyCell_SetTakeRef``) swaps under the lock and drops the old value
    after it, so this runs one: a function made on ``cell`` from a template's code.
    """
    types.FunctionType(_SET_CELL, {}, "set_cell", None, (cell,))(value)


def _set_cell_template() -> types.CodeType:
    _lm_cell: object = None

    def store(value: object) -> None:
        nonlocal _lm_cell
        _lm_cell = value

    return store.__code__


_SET_CELL: Final = _set_cell_template()


def _cells(snap: _Snapshot) -> list[tuple[str, Any]]:
    """The closure cells of ``snap``'s dispatchers, by name.

    The three dispatchers share their factory's cells, but each references only some of
    them (a sync ``call`` that refuses coroutine implementations holds none of the
    implementations; ``acall`` does), so all three are looked at.
    """
    out: dict[str, Any] = {}
    for fn in (snap.call, snap.dunder, snap.acall):
        code = getattr(fn, "__code__", None)
        if code is None:
            continue
        for name, cell in zip(code.co_freevars, getattr(fn, "__closure__", None) or (),
                              strict=True):
            out.setdefault(name, cell)
    return list(out.items())


def _empty_list(*args: Any, **kwargs: Any) -> list[Any]:
    return []


def _empty_dunder(self: Any, *args: Any, **kwargs: Any) -> list[Any]:
    return []


async def _empty_acall(*args: Any, **kwargs: Any) -> list[Any]:
    return []


#: ``_Snapshot.shape`` of a snapshot without implementations (None: they differ, or one
#: is not plain; else the shape key all of them have).
_NO_IMPLS: Final = ("no implementations",)
_NO_OWNERS: Final[frozenset[int]] = frozenset()
_WRAPPER: Final = operator.attrgetter("wrapper")
_OWNER: Final = operator.attrgetter("owner")
_IS_ASYNC: Final = operator.attrgetter("is_async")
_SHAPE: Final = operator.attrgetter("shape")
_ARGS: Final = operator.attrgetter("args")
_FN: Final = operator.attrgetter("fn")


