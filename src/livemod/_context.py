"""ModuleContext: what a module's ``init`` receives, and the resources it manages.

Everything taken through the context pushes its own undo onto the instance's managed stack
the moment it is taken, so a failed init and an unload undo the same things in the same
(reverse) order, and a module author never writes cleanup for them. Registrations made while
the module is COMING are staged and published together when init returns; made while LIVE,
they are published at once; while GOING they are refused.
"""

from __future__ import annotations

import logging
import sys
import threading
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, final

from ._hooks import Impl
from ._instance import Instance
from ._params import Params
from ._quiesce import describe_frame
from ._state import State
from .errors import ModuleGoing

if TYPE_CHECKING:
    from .host import Host

__all__ = ["HookHandle", "ModuleContext", "Registration"]


def _caller() -> str:
    frame = sys._getframe(2)
    try:
        return describe_frame(frame)
    finally:
        del frame


@final
class Registration:
    """One implementation on one hook; ``remove()`` takes it off early (idempotent)."""

    __slots__ = ("_remove", "hook", "impl")

    def __init__(self, hook: str, impl: Impl, remove: Callable[[], None]) -> None:
        self.hook = hook
        self.impl = impl
        self._remove = remove

    def remove(self) -> None:
        self._remove()

    def __repr__(self) -> str:
        return f"<livemod.Registration {self.impl.describe()} on {self.hook!r}>"


@final
class HookHandle:
    """A hook point seen from inside a module: add implementations, or call it."""

    __slots__ = ("_ctx", "name")

    def __init__(self, ctx: ModuleContext, name: str) -> None:
        self._ctx = ctx
        self.name = name

    def add(self, fn: Callable[..., Any], *, priority: int = 0) -> Registration:
        """Register ``fn`` on this hook (managed: undone automatically).

        Args:
            fn: any callable; a coroutine function makes the hook async-only.
            priority: higher runs earlier; equal priorities run in load order.
        """
        if not callable(fn):
            raise TypeError(f"hook {self.name!r}: {fn!r} is not callable")
        return self._ctx._host._register(self._ctx._inst, self.name, fn, priority)

    def __call__(self, *args: Any, **kwargs: Any) -> list[Any]:
        return self._ctx._host.hook(self.name)(*args, **kwargs)

    async def acall(self, *args: Any, **kwargs: Any) -> list[Any]:
        return await self._ctx._host.hook(self.name).acall(*args, **kwargs)


@final
class ModuleContext:
    """What ``init(mod)`` and ``exit(mod)`` receive.

    Attributes:
        name, version, path: the module's identity.
        params: typed, validated parameters (``mod.params.greeting``).
        log: a logger named ``livemod.mods.<name>``.
        stopping: a ``threading.Event`` set when the module starts going down; managed
            threads loop on ``while not mod.stopping.wait(interval)``.
        handover_state: what the previous version handed over during an upgrade, else None.
    """

    __slots__ = ("__weakref__", "_host", "_inst", "_pin_refs", "handover_state", "log")

    def __init__(self, host: Host, inst: Instance) -> None:
        self._host = host
        self._inst = inst
        self._pin_refs: dict[int, weakref.ref[Any]] = {}
        self.handover_state: object = None
        self.log = logging.getLogger(f"livemod.mods.{inst.name}")

    @property
    def name(self) -> str:
        return self._inst.name

    @property
    def version(self) -> str:
        return self._inst.info.version

    @property
    def path(self) -> str:
        return self._inst.info.path

    @property
    def params(self) -> Params:
        return self._inst.params

    @property
    def stopping(self) -> threading.Event:
        return self._inst.stopping

    @property
    def state(self) -> State:
        return self._inst.state

    def hook(self, name: str) -> HookHandle:
        """The hook point ``name`` (created on first use), to add implementations to."""
        return HookHandle(self, name)

    def export(self, name: str, obj: object) -> None:
        """Offer ``obj`` to other modules as ``require(<this module>).<name>``."""
        if not name.isidentifier():
            raise ValueError(f"module {self.name!r}: export name {name!r} is not an identifier")
        self._host._export(self._inst, name, obj)

    def require(self, name: str) -> Any:
        """The exports of module ``name`` as attributes; records "``name`` used by us".

        Raises:
            DependencyError: ``name`` is not loaded.
            ModuleGoing: ``name`` is being unloaded.
        """
        return self._host._require(self._inst, name)

    def on_exit(self, fn: Callable[[], object]) -> Callable[[], object]:
        """Run ``fn`` at unload (and after a failed init), in reverse order of registration."""
        self._check_open("register an exit callback")
        self._inst.undo.push(f"on_exit {getattr(fn, '__qualname__', fn)!r}", fn)
        return fn

    def thread(
        self,
        target: Callable[..., object],
        *args: Any,
        name: str | None = None,
        join_timeout: float = 5.0,
        **kwargs: Any,
    ) -> threading.Thread:
        """A managed daemon thread running ``target(*args, **kwargs)``.

        It starts when the module goes LIVE (at once if it already is), so a failed init
        never ran it. At unload ``mod.stopping`` is set before ``exit`` runs, and the thread
        is joined afterwards for up to ``join_timeout`` seconds; one that will not stop is
        reported and taints the host.
        """
        self._check_open("start a thread")
        inst = self._inst
        label = name or f"{inst.name}:{getattr(target, '__name__', 'thread')}"
        thread = threading.Thread(target=target, args=args, kwargs=kwargs, name=label, daemon=True)

        def start() -> None:
            thread.start()
            if thread.ident is not None:
                inst.thread_idents.add(thread.ident)

        def join() -> None:
            inst.stopping.set()
            if thread.ident is None:
                return
            thread.join(join_timeout)
            if thread.is_alive():
                self._host._taint(
                    "thread-not-stopped", inst.name,
                    f"thread {label!r} did not stop within {join_timeout:g}s of unload",
                )

        inst.undo.push(f"thread {label!r}", join)
        self._host._start_when_live(inst, start)
        return thread

    def pin(self, obj: object, what: str | None = None) -> Callable[[], None]:
        """Keep the module from finishing an unload while ``obj`` is alive.

        Returns a function that drops the pin early. ``obj`` must support weak references.
        """
        self._check_open("pin an object")
        inst, wake = self._inst, self._host._wakeups.put
        token = id(object())
        desc = what or f"pin on {type(obj).__qualname__} object (taken at {_caller()})"
        refs = self._pin_refs

        def released(_ref: object = None) -> None:
            # May run inside garbage collection on any thread: single dict operations and a
            # reentrant-safe SimpleQueue.put only -- never the host lock.
            if inst.pins.pop(token, None) is not None:
                refs.pop(token, None)
                wake(None)

        try:
            refs[token] = weakref.ref(obj, released)
        except TypeError:
            raise TypeError(
                f"module {self.name!r}: cannot pin a {type(obj).__qualname__} object: "
                f"it does not support weak references (pin an object that does, or use a hold)"
            ) from None
        inst.pins[token] = desc
        return released

    def _check_open(self, action: str) -> None:
        if self._inst.state in (State.GOING, State.GONE):
            raise ModuleGoing(
                f"module {self.name!r} is being unloaded; it cannot {action} now",
                module=self.name,
            )

    def __repr__(self) -> str:
        return f"<livemod.ModuleContext {self.name!r} {self._inst.state.name}>"
