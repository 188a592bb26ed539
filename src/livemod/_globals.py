"""Managed wrappers for the process-global registries where plugins leak most.

Each wrapper makes the registration and pushes its exact undo, so unload (or a failed init)
takes back precisely what the module put in, in reverse order. Where the registry is a
*slot* rather than a list (``signal.signal``, ``sys.excepthook``), the previous value is
restored only if the slot still holds ours: if someone replaced it after us, restoring would
clobber them, so livemod leaves it, logs a warning, and the leak check will name the slot if
it still keeps the module alive.

Cannot be undone, and so not offered here: changes made directly rather than through the
context (livemod cannot see them; the leak check names what they keep alive), ``os.environ``
and ``locale`` changes, ``sys.setrecursionlimit``, state inside C extensions, and ordinary
third-party modules the module imported (they stay in ``sys.modules``, shared by design).
"""

from __future__ import annotations

import atexit
import codecs
import copyreg
import logging
import signal
import sys
import threading
import warnings
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._instance import Instance

__all__ = ["GlobalsMixin"]

_log = logging.getLogger("livemod")
_MISSING: Any = object()

SignalHandler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None


def _logger(logger: str | logging.Logger | None) -> logging.Logger:
    return logger if isinstance(logger, logging.Logger) else logging.getLogger(logger)


class GlobalsMixin:
    """Methods of ``ModuleContext`` that register in process-global places, managed."""

    __slots__ = ()
    _inst: Instance

    def _check_open(self, action: str) -> None:
        raise NotImplementedError

    def _on_main_loop(self) -> Any:
        """The host's event loop if it runs on the main thread, else None."""
        raise NotImplementedError

    def _run_on_loop(self, fn: Callable[[], object]) -> None:
        raise NotImplementedError

    def _push(self, what: str, undo: Callable[[], object]) -> None:
        self._inst.undo.push(what, undo)

    def atexit(self, fn: Callable[..., object], *args: Any, **kwargs: Any) -> Callable[[], None]:
        """``atexit.register(fn, *args, **kwargs)``, unregistered at unload.

        Returns the callable actually registered (a wrapper of the module's own, so that
        the undo never removes an equal registration the application made).
        """
        self._check_open("register an atexit callback")

        def call() -> None:
            fn(*args, **kwargs)

        # unregister() removes every registration equal to its argument: a wrapper of our
        # own is what we take back, never the application's registration of the same fn.
        atexit.register(call)
        self._push(f"atexit {getattr(fn, '__qualname__', fn)!r}", lambda: atexit.unregister(call))
        return call

    def signal(self, signum: int, handler: SignalHandler) -> SignalHandler:
        """``signal.signal(signum, handler)``; the previous handler comes back at unload.

        Like ``signal.signal`` it must be called from the main thread.
        """
        self._check_open("install a signal handler")
        if threading.current_thread() is not threading.main_thread() and self._on_main_loop():
            box: list[SignalHandler] = []
            self._run_on_loop(lambda: box.append(signal.signal(signum, handler)))
            previous = box[0]
        else:
            previous = signal.signal(signum, handler)

        def restore() -> None:
            if signal.getsignal(signum) is handler:
                signal.signal(signum, previous)
            else:
                _log.warning("module %r: signal %d handler was replaced after it; left as is",
                             self._inst.name, signum)

        def restore_on_main_thread() -> None:
            # signal.signal works only on the main thread; an unload may run elsewhere (an
            # awaitable operation runs in a worker): send it to the loop, if that is main.
            if threading.current_thread() is threading.main_thread():
                restore()
                return
            loop = self._on_main_loop()
            if loop is None:
                raise RuntimeError(f"signal {signum}: cannot restore the previous handler off "
                                   f"the main thread (unload from the main thread)")
            self._run_on_loop(restore)

        self._push(f"signal {signum}", restore_on_main_thread)
        return previous

    def log_handler(
        self, handler: logging.Handler, logger: str | logging.Logger | None = None
    ) -> logging.Handler:
        """Add ``handler`` to ``logger`` (a name, a Logger, or None for the root logger).

        At unload it is removed and closed.
        """
        self._check_open("add a logging handler")
        target = _logger(logger)
        target.addHandler(handler)

        def remove() -> None:
            target.removeHandler(handler)
            handler.close()

        self._push(f"logging handler on {target.name!r}", remove)
        return handler

    def log_filter(
        self,
        filter: logging.Filter | Callable[[logging.LogRecord], bool],
        logger: str | logging.Logger | logging.Handler | None = None,
    ) -> None:
        """Add ``filter`` to a logger (by name or object) or a handler; removed at unload."""
        self._check_open("add a logging filter")
        target = logger if isinstance(logger, logging.Handler) else _logger(logger)
        target.addFilter(filter)
        self._push("logging filter", lambda: target.removeFilter(filter))

    def excepthook(self, hook: Callable[..., object]) -> None:
        """Set ``sys.excepthook``; the previous one comes back at unload if still ours."""
        self._slot(sys, "excepthook", hook)

    def threading_excepthook(self, hook: Callable[..., object]) -> None:
        """Set ``threading.excepthook``; the previous one comes back at unload if still ours."""
        self._slot(threading, "excepthook", hook)

    def patch(self, target: object, name: str, value: object) -> None:
        """Set ``target.name = value`` (a monkeypatch); restored at unload if still ours."""
        self._slot(target, name, value)

    def _slot(self, target: object, name: str, value: object) -> None:
        self._check_open(f"set {name}")
        previous = getattr(target, name, _MISSING)
        setattr(target, name, value)

        def restore() -> None:
            if getattr(target, name, _MISSING) is not value:
                _log.warning("module %r: %s was replaced after it; left as is",
                             self._inst.name, name)
            elif previous is _MISSING:
                delattr(target, name)
            else:
                setattr(target, name, previous)

        self._push(f"{getattr(target, '__name__', type(target).__name__)}.{name}", restore)

    def warnings_filter(
        self,
        action: warnings._ActionKind,
        message: str = "",
        category: type[Warning] = Warning,
        module: str = "",
        lineno: int = 0,
        append: bool = False,
    ) -> None:
        """``warnings.filterwarnings(...)``; that exact filter is removed at unload."""
        self._check_open("add a warnings filter")
        before = list(warnings.filters)
        warnings.filterwarnings(action, message, category, module, lineno, append)
        added = [f for f in warnings.filters if not any(f is b for b in before)]
        # filterwarnings drops an equal filter the application had: remember where it was.
        displaced = [(i, b) for i, b in enumerate(before)
                     if not any(b is f for f in warnings.filters)]

        def remove() -> None:
            filters: list[Any] = warnings.filters  # type: ignore[assignment]
            for entry in added:
                _remove_identity(filters, entry)
            for index, entry in displaced:
                if entry not in filters:
                    filters.insert(min(index, len(filters)), entry)
            warnings._filters_mutated()  # type: ignore[attr-defined]

        self._push("warnings filter", remove)

    def meta_path(self, finder: Any, index: int = 0) -> None:
        """Insert ``finder`` into ``sys.meta_path``; removed at unload."""
        self._check_open("add a meta path finder")
        sys.meta_path.insert(index, finder)
        self._push("sys.meta_path finder", lambda: _remove_identity(sys.meta_path, finder))

    def path_hook(self, hook: Callable[[str], Any], index: int = 0) -> None:
        """Insert ``hook`` into ``sys.path_hooks``; removed (with the finders it made) at unload."""
        self._check_open("add a path hook")
        sys.path_hooks.insert(index, hook)
        before = set(sys.path_importer_cache)

        def remove() -> None:
            _remove_identity(sys.path_hooks, hook)
            # Finders the hook made sit in the cache; drop entries added since, so the
            # remaining hooks are asked again.
            for key in [k for k in sys.path_importer_cache if k not in before]:
                sys.path_importer_cache.pop(key, None)

        self._push("sys.path_hooks entry", remove)

    def copyreg(self, cls: type, reducer: Callable[..., Any]) -> None:
        """``copyreg.pickle(cls, reducer)``; the previous reducer comes back at unload."""
        self._check_open("register a pickle reducer")
        table = copyreg.dispatch_table
        previous = table.get(cls, _MISSING)
        copyreg.pickle(cls, reducer)

        def restore() -> None:
            if table.get(cls) is not reducer:
                return
            if previous is _MISSING:
                del table[cls]
            else:
                table[cls] = previous

        self._push(f"copyreg {cls.__qualname__}", restore)

    def codec(self, search: Callable[[str], codecs.CodecInfo | None]) -> None:
        """``codecs.register(search)``; unregistered at unload."""
        self._check_open("register a codec")
        codecs.register(search)
        self._push("codec search function", lambda: codecs.unregister(search))


def _remove_identity(items: list[Any], item: object) -> None:
    for i, existing in enumerate(items):
        if existing is item:
            del items[i]
            return
