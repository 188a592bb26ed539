"""Noticing a module that rebinds livemod's own public names or patches its classes.

Module code runs in the host's process and can reach livemod like any other module. A
baseline of the public names (``livemod.Host``) and of every public class's attributes
(``livemod.Host.rmmod``) is taken when the first host is made; after each load, failed load
and exit the host compares, puts back what changed, and taints itself. Private internals
are not covered: code that sets out to subvert the process cannot be stopped from inside it.
"""

from __future__ import annotations

import sys
from types import ModuleType
from typing import final

__all__ = ["Baseline"]

_ABSENT = object()


def _package() -> ModuleType:
    # The package itself, by name rather than by import: importing it from here would close
    # an import circle (livemod -> host -> ... -> _tamper -> livemod).
    return sys.modules[__name__.rpartition(".")[0]]


@final
class Baseline:
    """livemod's public surface as first seen."""

    __slots__ = ("_attrs", "_names")

    def __init__(self) -> None:
        livemod = _package()
        self._names = {k: getattr(livemod, k) for k in livemod.__all__}
        self._attrs = {k: dict(vars(obj)) for k, obj in self._names.items()
                       if isinstance(obj, type)}

    def restore(self) -> list[str]:
        """Put back whatever differs from the baseline; return what it was."""
        livemod = _package()
        changed = []
        for key, value in self._names.items():
            if getattr(livemod, key, _ABSENT) is not value:
                setattr(livemod, key, value)
                changed.append(f"livemod.{key}")
        for key, original in self._attrs.items():
            cls = self._names[key]
            now = vars(cls)
            if len(now) == len(original) and all(
                now.get(attr, _ABSENT) is value for attr, value in original.items()
            ):
                continue
            for attr in [a for a in now if a not in original]:
                delattr(cls, attr)
                changed.append(f"livemod.{key}.{attr}")
            for attr, value in original.items():
                if now.get(attr, _ABSENT) is not value:
                    setattr(cls, attr, value)
                    changed.append(f"livemod.{key}.{attr}")
        return changed
