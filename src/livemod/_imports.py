"""What module code gets back from ``mod.require`` and from imports livemod intercepts.

``require`` returns a view that looks the exports up on every access, so a holder always
sees the current version of the module it requires. ``import livemod.mods.x`` returns a
namespace with just the modules asked for. ``import atexit`` returns a view of the real
module that notes direct registrations (as strings) for the leak report.
"""

from __future__ import annotations

import atexit
import importlib
import sys
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import TYPE_CHECKING, Any, final

from ._instance import Instance
from ._quiesce import describe_frame
from ._state import State
from ._trampolines import register_atexit, unregister_atexit
from .errors import ModuleGoing

if TYPE_CHECKING:
    from ._table import ModuleTable

__all__ = ["Exports", "ModuleView", "Namespace", "watched_atexit"]


@final
class Exports:
    """``mod.require(name)``: the named module's exports, looked up on each access, so a
    holder always sees the current version (an upgrade rebinds them)."""

    __slots__ = ("_name", "_table")

    def __init__(self, table: ModuleTable, name: str) -> None:
        self._table = table
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        inst = self._table.names.get(self._name)
        if inst is None or inst.state is not State.LIVE:
            raise ModuleGoing(f"module {self._name!r} is not live", module=self._name)
        try:
            return inst.exports[attr]
        except KeyError:
            raise AttributeError(
                f"module {self._name!r} exports no {attr!r} "
                f"(it exports: {', '.join(sorted(inst.exports)) or 'nothing'})"
            ) from None

    def __dir__(self) -> list[str]:
        inst = self._table.names.get(self._name)
        return sorted(inst.exports) if inst else []

    def __repr__(self) -> str:
        return f"<livemod exports of {self._name!r}>"


@final
class Namespace:
    """What ``import livemod.mods...`` binds inside a module: attribute access only."""

    def __init__(self, attrs: Mapping[str, Any], fallback: Any = None) -> None:
        self.__dict__.update(attrs)
        self._fallback = fallback

    def __getattr__(self, name: str) -> Any:
        if self._fallback is None:
            raise AttributeError(name)
        return getattr(self._fallback, name)


def watched_atexit(inst: Instance) -> Any:
    """``atexit`` as module code sees it: the real one, with ``register`` noted (as strings)
    so the leak report can name a callback registered directly instead of with mod.atexit."""
    view = ModuleType("atexit", atexit.__doc__)
    view.__dict__.update({k: v for k, v in vars(atexit).items() if not k.startswith("__")})
    notes = inst.own_list("direct_atexit")

    def register(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Callable[..., Any]:
        caller = sys._getframe(1)
        where = describe_frame(caller)
        notes.append((getattr(fn, "__qualname__", repr(fn)), where))
        del caller
        register_atexit(inst, fn, args, kwargs, where=where)
        return fn

    def unregister(fn: Callable[..., Any]) -> None:
        unregister_atexit(inst, fn)  # what register took was a trampoline, not fn itself
        atexit.unregister(fn)  # and a registration made on its behalf by other code

    view.register = register  # type: ignore[attr-defined]
    view.unregister = unregister  # type: ignore[attr-defined]
    return view


@final
class ModuleView:
    """``host.namespace(name)``: a loaded module's namespace, looked up on each access.

    It holds the host's module table and a dotted path, never the module, so it does not
    keep an unloaded module alive; after an upgrade it reaches the new version. A submodule
    reached through it is a view too (``host.namespace("rich").console.Console``),
    imported on first use like ``import rich.console``; anything else is the object itself.
    """

    __slots__ = ("_name", "_path", "_table")

    def __init__(self, table: ModuleTable, name: str, path: tuple[str, ...] = ()) -> None:
        self._table = table
        self._name = name
        self._path = path

    def _target(self) -> tuple[str, ModuleType]:
        from .errors import ModuleNotFound

        inst = self._table.find(self._name)
        if inst is None:
            raise ModuleNotFound(f"module {self._name!r} is not loaded (see lsmod for what "
                                 f"is)", module=self._name)
        module = inst.module
        if inst.state is not State.LIVE or module is None:
            raise ModuleGoing(f"module {self._name!r} is {inst.state.name}, not LIVE",
                              module=self._name)
        for part in self._path:
            module = getattr(module, part)
        return inst.private_name, module

    def __getattr__(self, attr: str) -> Any:
        private, module = self._target()
        try:
            value = getattr(module, attr)
        except AttributeError:
            if not hasattr(module, "__path__") or attr.startswith("_"):
                raise
            # A package's submodule not imported yet: import it, as ``import pkg.sub``
            # would in the module (a name that is not a submodule stays AttributeError).
            try:
                value = importlib.import_module(f"{module.__name__}.{attr}")
            except ModuleNotFoundError as exc:
                if exc.name != f"{module.__name__}.{attr}":
                    raise
                raise AttributeError(
                    f"module {self._name!r} has no attribute or submodule {attr!r}"
                ) from None
        if ModuleType in type(value).__mro__ and value.__name__.startswith(private + "."):
            return ModuleView(self._table, self._name, (*self._path, attr))
        return value

    def __dir__(self) -> list[str]:
        return sorted(vars(self._target()[1]))

    def __repr__(self) -> str:
        dotted = ".".join((self._name, *self._path))
        return f"<livemod namespace of {dotted!r}>"
