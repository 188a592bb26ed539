"""The records of static module metadata: ``ModuleInfo`` and ``ParamSpec``.

Frozen and free of behaviour, so every layer (the reader, depmod's index, the host, the
control plane) can pass them around without importing how they are read.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, final

from ._version import Requirement

__all__ = ["MANIFEST_NAME", "MISSING", "PARAM_TYPES", "ModuleInfo", "ParamSpec"]

MANIFEST_NAME: Final = "__livemod__"
PARAM_TYPES: Final = ("str", "int", "float", "bool", "list")


class _MissingType(enum.Enum):
    # An enum member is the sentinel idiom mypy understands, and it survives copy and pickle.
    MISSING = "MISSING"

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = _MissingType.MISSING
"""The ``default`` of a parameter that has none (and is therefore required)."""


@final
@dataclass(frozen=True, slots=True)
class ParamSpec:
    """One declared module parameter.

    ``default`` is already of the declared ``type`` (a list default is a tuple), or
    :data:`MISSING` when the parameter must be given.
    """

    name: str
    type: str
    default: object = MISSING
    writable: bool = False
    doc: str = ""

    @property
    def required(self) -> bool:
        """True when the parameter has no default and must be given at load time."""
        return self.default is MISSING



@final
@dataclass(frozen=True, slots=True)
class ModuleInfo:
    """Everything known about a module without running it (what modinfo shows).

    ``path`` is what was given (the ``.py`` file or the package directory), absolute;
    ``source_file`` is the file holding the manifest (the file itself or ``__init__.py``).
    ``params`` is a read-only mapping in declaration order.
    """

    name: str
    version: str
    description: str
    license: str
    author: str
    depends: tuple[Requirement, ...]
    aliases: tuple[str, ...]
    params: Mapping[str, ParamSpec]
    path: str
    source_file: str
    is_package: bool

    @property
    def native(self) -> tuple[str, ...]:
        """The package's extension modules (``.so`` files, relative paths): native code,
        loaded from a copy per version, which stays mapped for the life of the process."""
        from ._native import SUFFIXES

        if not self.is_package:
            return ()
        found: list[str] = []
        for here, dirs, names in os.walk(self.path, followlinks=False):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            found += [os.path.relpath(os.path.join(here, n), self.path).replace(os.sep, "/")
                      for n in sorted(names) if n.endswith(SUFFIXES)]
            if len(found) > 1000:
                break
        return tuple(found)
