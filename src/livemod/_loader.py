"""Executing a module's code in a private namespace, and resolving ``livemod.mods.<name>``.

Each instance lives in ``sys.modules`` under a private name qualified by host (and, if an
upgrade briefly needs two instances of one name, by instance), never under the name a plain
import would use, so unload and upgrade never fight the normal import cache.

``from livemod.mods.log import write`` inside a module must (1) find ``log`` in the host that
owns the *importing* module, and (2) record "log used by <importer>". A meta-path finder is
consulted only on the first import of a name, so it cannot see a second importer; instead
each module's namespaces get their own ``__builtins__`` (``_wiring``) whose ``__import__``
knows the importing module, and functions defined in the module keep it, so lazy imports
inside functions are seen too.
Submodules of a package module are found by one process-wide meta-path finder and executed
with the same ``__builtins__``.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.resources.abc
import os
import pathlib
import sys
import types
from collections.abc import Callable, Mapping, Sequence
from itertools import compress, repeat
from typing import Any, Final

from . import _native, _sysmodules, _wiring
from ._bytecode import compile_cached
from ._owned import kind

__all__ = [
    "Importer",
    "exec_module",
    "install_finder",
    "namespaces_of",
    "remove_modules",
]

PREFIX: Final = "livemod.mods."

#: Process-global registries whose direct use by module code is worth noticing: importing
#: them from a module gives a view that records registrations for the leak report.
WATCHED: Final = frozenset({"atexit"})

#: importer(name, fromlist, importing globals) -> what ``__import__`` returns for a
#: livemod.mods.* name (or a WATCHED one).
Importer = Callable[[str, Sequence[str], Any], Any]


def exec_module(
    private_name: str,
    code: types.CodeType,
    *,
    source_file: str,
    package_dir: str | None,
    builtins: dict[str, Any],
    files: Mapping[str, bytes] | None = None,
) -> types.ModuleType:
    """Create the module under ``private_name``, register it, run its body.

    ``files`` (absolute path -> bytes) is the snapshot read at load: a package's submodules
    are compiled from it, never read again from disk, so what was checked is what runs.
    On any exception the module and every submodule it imported are removed from
    ``sys.modules`` again before the exception propagates.
    """
    module = types.ModuleType(private_name)
    spec = importlib.machinery.ModuleSpec(
        private_name, _LOADER, origin=source_file, is_package=package_dir is not None
    )
    spec.has_location = True
    # Only a package's submodules are compiled from the snapshot: a single file's bytes
    # are not kept for the module's life (tracebacks read the file, as for any import).
    spec.loader_state = files if package_dir is not None else None
    if package_dir is not None:
        spec.submodule_search_locations = [package_dir]
        module.__path__ = [package_dir]
    module.__spec__ = spec
    module.__loader__ = _LOADER
    module.__file__ = source_file
    module.__package__ = private_name if package_dir else private_name.rpartition(".")[0]
    module.__dict__["__builtins__"] = builtins
    sys.modules[private_name] = module
    try:
        exec(code, module.__dict__)
    except BaseException:
        remove_modules(private_name)
        raise
    return module


def remove_modules(private_name: str, names: list[str] | None = None) -> list[types.ModuleType]:
    """Remove the module and its submodules from ``sys.modules``; return what was removed.
    ``names``: its names as an unload's look just found them (else all keys are read)."""
    if names is None:
        below = private_name + "."
        keys = list(_sysmodules.snapshot())
        try:  # a C-level pass first
            near = compress(keys, map(str.startswith, keys, repeat(private_name)))
            names = [n for n in near if n == private_name or n.startswith(below)]
        except TypeError:  # a key that is not a string
            names = [n for n in keys
                     if type(n) is str and (n == private_name or n.startswith(below))]
    return [m for m in (sys.modules.pop(n, None) for n in names) if m is not None]


def namespaces_of(private_name: str) -> list[types.ModuleType]:
    """The module and its submodules (a scan of ``sys.modules`` only for packages)."""
    # By the real type only: hasattr/isinstance on a lazy module object (six's moves, a
    # module that replaced itself in sys.modules) would run its __getattr__ or __class__.
    main = sys.modules.get(private_name)
    if type(main) is types.ModuleType and "__path__" not in main.__dict__:
        return [main]
    below = private_name + "."
    return [
        m
        for n, m in list(_sysmodules.snapshot().items())
        if (n == private_name or n.startswith(below)) and kind(m, types.ModuleType)
    ]


class _Loader(importlib.abc.Loader):
    """Runs submodules of a livemod package with their package's ``__builtins__``."""

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        return None

    def get_resource_reader(self, fullname: str) -> _Resources | None:
        """``importlib.resources`` of a package module (certifi's ``files("certifi")``):
        the data files in its folder."""
        module = sys.modules.get(fullname)
        spec = getattr(module, "__spec__", None)
        if spec is None or spec.origin is None or not spec.submodule_search_locations:
            return None
        return _Resources(os.path.dirname(spec.origin))

    def exec_module(self, module: types.ModuleType) -> None:
        spec = module.__spec__
        assert spec is not None and spec.origin is not None
        parent = sys.modules[spec.name.rpartition(".")[0]]
        files = spec.loader_state
        if files is not None:
            source = files[spec.origin]
        else:
            with open(spec.origin, "rb") as f:
                source = f.read()
        code = compile_cached(source, spec.origin)
        module.__dict__["__builtins__"] = parent.__dict__["__builtins__"]
        exec(code, module.__dict__)


class _Resources(importlib.resources.abc.TraversableResources):
    """Resources of a package module: files in its folder, read when asked for (data, not
    code: the load's snapshot holds what runs)."""

    def __init__(self, folder: str) -> None:
        self._folder = folder

    def files(self) -> pathlib.Path:
        return pathlib.Path(self._folder)


_LOADER: Final = _Loader()


class _Finder(importlib.abc.MetaPathFinder):
    """Finds submodules of livemod package modules (``livemod.mods._h1.pkg.sub``)."""

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: types.ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if not fullname.startswith(PREFIX + "_h") or not path:
            return None
        parent = sys.modules.get(fullname.rpartition(".")[0])
        if parent is None or getattr(parent, "__loader__", None) is not _LOADER:
            return None
        leaf = fullname.rpartition(".")[2]
        files = getattr(parent.__spec__, "loader_state", None)

        def exists(candidate: str) -> bool:
            # Only what the load read (and a signature check saw) exists for the package:
            # a file added since is not imported.
            return candidate in files if files is not None else os.path.isfile(candidate)

        for folder in path:
            package = os.path.join(folder, leaf, "__init__.py")
            if exists(package):
                spec = importlib.machinery.ModuleSpec(
                    fullname, _LOADER, origin=package, is_package=True
                )
                spec.submodule_search_locations = [os.path.dirname(package)]
                spec.has_location = True
                spec.loader_state = files
                return spec
            single = os.path.join(folder, leaf + ".py")
            if exists(single):
                spec = importlib.machinery.ModuleSpec(fullname, _LOADER, origin=single)
                spec.has_location = True
                spec.loader_state = files
                return spec
            native = _native.find(files, folder, leaf) if files is not None else None
            if native is not None:  # an extension module: mapped from a copy of its own
                return _native.spec_for(fullname, native, files[native], vars(parent))  # type: ignore[index]
        if files is not None:
            # Returning None would let the path finder import the file from disk: a file
            # added since the load (and its signature check) must never run.
            raise ModuleNotFoundError(
                f"No module named {fullname!r}: {leaf!r} is not part of the package as it "
                f"was loaded (files added since are not imported; upgrade the module)",
                name=fullname,
            )
        return None


_FINDER: Final = _Finder()


def install_finder() -> None:
    """Put the submodule finder on ``sys.meta_path`` once per process (it is never removed:
    it is stateless and answers only for livemod's private names)."""
    if _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)
    _wiring.install()
