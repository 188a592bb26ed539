"""Import wiring: a module's own name and its declared dependencies resolve to livemod's copies.

A package written without livemod in mind imports itself by its public name
(``from rich.console import Console``) and imports the packages it depends on with a plain
``import urllib3``. Under livemod those live under private names
(``livemod.mods._h1a2b3c4d.rich``), so a plain import would find nothing -- or, worse, an
installed copy beside livemod's, and the two copies get mixed.

As an OSGi bundle's class loader wires its imports to the bundle that exports them, each
module instance gets a :class:`Wiring`: a map from its own top-level name and its declared
dependencies' names to private names. Three interpositions consult it:

* a **per-module ``__builtins__``** whose ``__import__`` is bound to the module's wiring.
  Every ``import`` / ``from ... import`` statement, ``__import__(...)`` with or without
  globals, and code exec'd or eval'd from the module's frames (exec takes the caller frame's
  builtins when the globals it is given have none) go through it. Functions defined in the
  module keep it, so lazy imports are wired too. Per module, not per host: with fresh
  globals there is no ``__name__`` to find the importer by; the builtins themselves say who
  is importing.
* **``importlib.import_module``** does not use ``__import__``; it calls the bootstrap's
  ``_gcd_import``. That is replaced once per process by a function that walks the current
  thread's frames to the first whose builtins are a module's (one ``getattr`` per frame,
  about a microsecond), so installed code such as ``pkgutil.resolve_name`` running on a
  module's behalf is wired as well.
* two **meta-path finders**. The first, at the front, answers
  ``importlib.metadata`` for a module's own name from its manifest, and notices an import
  of a wired name that was *not* remapped (native code, a direct ``builtins.__import__``):
  the installed copy then loads beside livemod's, which is recorded as the ``mixed-copies``
  taint. The second, at the end, is reached only when nothing else found the public name:
  it raises an ImportError that names the livemod module and its path instead of a bare
  "No module named".

Not wired, and said so: imports made by native code (CPython reads ``sys.modules`` by the
public name after calling ``__import__``), a direct ``builtins.__import__``, and callbacks
run later with no frame of the module on the stack.
"""

from __future__ import annotations

import builtins
import importlib
import importlib.abc
import importlib.machinery
import importlib.metadata
import os
import re
import sys
import threading
import weakref
from collections.abc import Iterator, Sequence
from types import FrameType, MethodType, ModuleType
from typing import Any, Final, Protocol, final

from ._nsget import ns_get

__all__ = ["Wiring", "WiringHost", "install", "module_builtins"]

_BUILTINS: Final = builtins.__dict__
_REAL_IMPORT: Final = builtins.__import__
PREFIX: Final = "livemod.mods."

class WiringHost(Protocol):
    """The host's side of one module's wiring (``_wire``): one small object per module
    whose methods the wiring calls, rather than a closure per callback (a closure and its
    cells cost ~200 bytes, and a module had seven)."""

    def resolve_dep(self, top: str) -> str:
        """A dependency's public top-level name -> the private top-level name of the
        version current now (recording the "used by" edge); or raises ImportError."""

    def taken(self, top: str) -> str | None:
        """The other livemod module of the host imported by ``top``, if any."""

    def metadata(self, top: str) -> tuple[str, str, str] | None:
        """(name, version, source file) of the module ``top`` stands for, if loaded."""

    def on_mixed(self, top: str) -> None:
        """An unwired import let the installed copy of ``top`` load beside livemod's."""

    def note(self, name: str, fromlist: Sequence[str] | None) -> None:
        """The module's code imported installed module ``name`` (``_patches``)."""

    def livemod_import(self, name: str, fromlist: tuple[str, ...]) -> Any:
        """Answer an import of ``livemod.mods.*`` or of a watched name (``atexit``)."""


@final
class Wiring:
    """Which public names one module instance sees as livemod's copies.

    ``own``: the public top-level names of the module itself (``private`` is what they
    stand for; a tuple of one or two, where a dict cost ~100 bytes more). ``deps``: public
    top-level names of declared dependencies, resolved on each import so that an import
    binds the version current when it ran. Names of other livemod modules in the host
    (``host.taken``) are refused unless declared. Its bound ``__import__`` is the one in
    the module's ``__builtins__`` (which is how a frame's wiring is found).
    """

    __slots__ = ("__weakref__", "deps", "host", "module", "own", "path", "private")

    def __init__(
        self, module: str, path: str, private: str, own: Sequence[str], deps: Sequence[str],
        host: WiringHost,
    ) -> None:
        self.module = module
        self.path = path
        self.private = private
        self.own = tuple(own)
        self.deps = frozenset(deps) - set(own) if deps else _NO_NAMES
        self.host = host

    def private_for(self, name: str) -> str | None:
        """The private name ``name`` stands for in this module, or None if it is not wired.

        Raises ImportError for a livemod module of the host that is neither own nor
        declared, and for a declared dependency that is not loaded.
        """
        top, dot, rest = name.partition(".")
        private = self.private if top in self.own else None
        if private is None:
            if top in self.deps:
                private = self.host.resolve_dep(top)
            else:
                # Most imports are of the standard library: a set lookup rules them out
                # before the host's table is scanned.
                owner = self.host.taken(top) if top in _wired_names else None
                if owner is None:
                    return None
                raise ImportError(
                    f"module {self.module!r} ({self.path}) imports {name!r}, which is "
                    f"livemod module {owner!r} of this host, but does not declare it (add "
                    f"{owner!r} to \"depends\" in its __livemod__ manifest)",
                    name=name, path=self.path,
                )
        return private + dot + rest

    def metadata(self, top: str) -> tuple[str, str, str] | None:
        return self.host.metadata(top)

    def on_mixed(self, top: str) -> None:
        self.host.on_mixed(top)

    def names(self) -> set[str]:
        return set(self.own) | set(self.deps)

    def __import__(
        self,
        name: str,
        globals: Any = None,
        locals: Any = None,
        fromlist: Sequence[str] | None = (),
        level: int = 0,
    ) -> Any:
        """The module's ``__import__`` (bound: ``module_builtins``)."""
        if level == 0:
            if name.startswith("livemod.mods"):
                own_private = self.private
                if name == own_private or name.startswith(own_private + "."):
                    # six: __import__(__name__ + ".moves") names the module privately.
                    return _REAL_IMPORT(name, globals, locals, fromlist or (), 0)
                return self.host.livemod_import(name, tuple(fromlist or ()))
            if name == "atexit":
                return self.host.livemod_import(name, tuple(fromlist or ()))
            private = self.private_for(name)
            if private is not None:
                if type(fromlist) is list and not fromlist:  # perhaps PyImport_Import
                    return _from_c(self, name, private)
                return import_private(private, fromlist)
            found = _REAL_IMPORT(name, globals, locals, fromlist or (), 0)
            self.host.note(name, fromlist)
            return found
        return _REAL_IMPORT(name, globals, locals, fromlist or (), level)

    def __repr__(self) -> str:
        return f"<livemod wiring of {self.module!r}: {sorted(self.names())}>"


_NO_NAMES: Final[frozenset[str]] = frozenset()  # shared: most modules declare no depends


def module_builtins(wiring: Wiring) -> dict[str, Any]:
    """A ``__builtins__`` for one module: the real builtins with the wiring's bound
    ``__import__`` (a bound method, ~64 bytes, where a closure was ~400 with its cells)."""
    table = dict(_BUILTINS)
    table["__import__"] = wiring.__import__
    return table


def _from_c(wiring: Wiring, name: str, private: str) -> Any:
    """An import that may come from C: ``PyImport_Import`` (what an extension module's
    ``PyImport_ImportModule`` and pickle's class lookup use) calls ``__import__`` with an
    empty *list* for ``fromlist`` -- Python's statements pass a tuple or None -- and then
    reads ``sys.modules`` by the public name, which livemod never fills in: CPython raises a
    bare KeyError. Say instead what happened and what to do. Python code passing ``[]``
    itself (an old idiom) names ``__import__`` in its own code, and goes through as ever."""
    found = import_private(private, None)
    caller = sys._getframe(2)  # 0: here, 1: the wiring's __import__, 2: who called it
    try:
        if "__import__" in caller.f_code.co_names:
            return found
    finally:
        del caller
    present = sys.modules.get(name)
    if present is None:
        raise ImportError(
            f"module {wiring.module!r} ({wiring.path}) imports {name!r} from C code (an "
            f"extension module's PyImport_ImportModule, or pickle finding a class of a "
            f"pickle that names {name!r}), which then looks up sys.modules[{name!r}]: "
            f"livemod keeps its copy under {private!r} and never puts a public name "
            f"there, so this import cannot be wired (import it from Python code; pickles "
            f"made by livemod's copy name the private module)", name=name, path=wiring.path,
        )
    if present is not sys.modules.get(private):
        wiring.on_mixed(name.partition(".")[0])  # C gets the installed copy beside ours
    return found


def import_private(private: str, fromlist: Sequence[str] | None) -> Any:
    """``__import__`` of a private name: the module itself with a fromlist, else its top."""
    if fromlist:
        return _REAL_IMPORT(private, None, None, fromlist, 0)
    _REAL_IMPORT(private, None, None, (), 0)
    return sys.modules[_top_private(private)]


def _top_private(private: str) -> str:
    # livemod.mods.<tag>.<name>[.sub...] -> livemod.mods.<tag>.<name>
    return ".".join(private.split(".", 4)[:4])


def wiring_on_stack(frame: FrameType | None) -> Wiring | None:
    """The wiring of the first frame (from ``frame`` outwards) that runs a module's code."""
    while frame is not None:
        table = frame.f_builtins
        if table is not _BUILTINS:
            found = ns_get(table, "__import__")  # any thread may ask: see _nsget
            if type(found) is MethodType:
                wiring = found.__self__
                if type(wiring) is Wiring:
                    return wiring
        frame = frame.f_back
    return None


# ------------------------------------------------------------- process-wide interpositions

#: Every live wiring, for the finders (a weak set: a module's wiring dies with it).
_LIVE: Final[weakref.WeakSet[Wiring]] = weakref.WeakSet()
_live_lock = threading.Lock()  # protects: _LIVE and the counts in _wired_names
#: Every name some live wiring has -> how many have it. Kept by counting, not rebuilt from
#: ``_LIVE`` (that made each load cost as much as all the loaded modules' wirings). Read
#: without the lock (one ``in``). A wiring that dies unregistered leaves its names here,
#: which only costs the finders a closer look.
_wired_names: dict[str, int] = {}


def register(wiring: Wiring) -> None:
    """Make the finders aware of ``wiring`` (until :func:`unregister` or its death)."""
    with _live_lock:
        if wiring in _LIVE:
            return
        _LIVE.add(wiring)
        for name in wiring.names():
            _wired_names[name] = _wired_names.get(name, 0) + 1


def unregister(wiring: Wiring) -> None:
    with _live_lock:
        if wiring not in _LIVE:
            return
        _LIVE.discard(wiring)
        for name in wiring.names():
            left = _wired_names.get(name, 1) - 1
            if left > 0:
                _wired_names[name] = left
            else:
                _wired_names.pop(name, None)


_bootstrap: Any = importlib._bootstrap
_original_gcd_import: Final = _bootstrap._gcd_import


def _gcd_import(name: str, package: str | None = None, level: int = 0) -> ModuleType:
    if level == 0 and not name.startswith("livemod.mods"):
        wiring = wiring_on_stack(sys._getframe(1))
        if wiring is not None:
            private = wiring.private_for(name)
            if private is not None:
                return _original_gcd_import(private)  # type: ignore[no-any-return]
    return _original_gcd_import(name, package, level)  # type: ignore[no-any-return]


_gcd_import._livemod = True  # type: ignore[attr-defined]


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@final
class _ManifestDistribution(importlib.metadata.Distribution):
    """``importlib.metadata`` for a livemod module: name and version from its manifest."""

    def __init__(self, name: str, version: str, path: str) -> None:
        self._text = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
        self._path = path

    def read_text(self, filename: str) -> str | None:
        return self._text if filename in ("METADATA", "PKG-INFO") else None

    def locate_file(self, path: str | os.PathLike[str]) -> Any:
        import pathlib

        return pathlib.Path(self._path).parent / path


@final
class _FrontFinder(importlib.abc.MetaPathFinder):
    """First on ``sys.meta_path``: metadata from manifests; unwired imports are noticed."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if path is None and fullname in _wired_names:
            wiring = wiring_on_stack(sys._getframe(1))
            # Not remapped, yet a frame of the module is importing it: native code or a
            # direct builtins.__import__. If an installed copy loads, it is mixed in.
            if (wiring is not None and fullname in wiring.names()
                    and importlib.machinery.PathFinder.find_spec(fullname) is not None):
                wiring.on_mixed(fullname)
        return None

    def find_distributions(
        self, context: Any = None
    ) -> Iterator[importlib.metadata.Distribution]:
        name = getattr(context, "name", None)
        if not name:
            return iter(())
        wiring = wiring_on_stack(sys._getframe(1))
        if wiring is None:
            return iter(())
        wanted = _normal(name)
        for top in wiring.names():
            meta = wiring.metadata(top)
            if meta is not None and wanted in (_normal(top), _normal(meta[0])):
                return iter((_ManifestDistribution(meta[0], meta[1], meta[2]),))
        return iter(())


@final
class _LastFinder(importlib.abc.MetaPathFinder):
    """Last on ``sys.meta_path``: a public name nothing found but livemod has loaded gets an
    error naming the module and the path, and what is and is not wired."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        top = fullname.partition(".")[0]
        if top not in _wired_names:
            return None
        # Only an import gets the error; importlib.util.find_spec asks whether a module
        # exists, and must still hear None.
        if sys._getframe(2).f_code.co_name != "_find_and_load_unlocked":
            return None
        wiring = wiring_on_stack(sys._getframe(1))
        if wiring is not None and top in wiring.names():
            raise ModuleNotFoundError(
                f"No module named {fullname!r}: module {wiring.module!r} ({wiring.path}) "
                f"imported it in a way livemod cannot wire (native code, or a direct "
                f"builtins.__import__); use an import statement or importlib.import_module",
                name=fullname, path=wiring.path,
            )
        with _live_lock:
            owners = sorted({(w.module, w.path) for w in _LIVE if top in w.own})
        if not owners:
            return None
        where = ", ".join(f"{m!r} ({p})" for m, p in owners)
        raise ModuleNotFoundError(
            f"No module named {fullname!r}: {where} is loaded by livemod under a private "
            f"name, and this import ran with no frame of it on the stack (a callback, or "
            f"code outside the module), so it is not wired; call it through "
            f"host.namespace({owners[0][0]!r})",
            name=fullname, path=owners[0][1],
        )


_FRONT: Final = _FrontFinder()
_LAST: Final = _LastFinder()
_install_lock = threading.Lock()


def install() -> None:
    """Put the interpositions in place once per process. They are never removed: they are
    stateless apart from the weak set of live wirings, and pass everything else through."""
    with _install_lock:
        if not getattr(_bootstrap._gcd_import, "_livemod", False):
            _bootstrap._gcd_import = _gcd_import
        if _FRONT not in sys.meta_path:
            sys.meta_path.insert(0, _FRONT)
        if _LAST not in sys.meta_path:
            sys.meta_path.append(_LAST)
