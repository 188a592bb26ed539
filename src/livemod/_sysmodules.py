"""A consistent copy of ``sys.modules``, safe while other threads import.

``list(sys.modules.items())`` is not atomic: building each item allocates, an allocation
may run a garbage collection, a collection may run finalizers, and a finalizer lets another
thread run and import, so the iteration fails with "dictionary changed size during
iteration" (seen with two hosts loading at once). ``dict.copy()`` allocates the new dict
before it reads the old one and then copies without running Python code, so it is one
consistent view on every supported CPython (free-threaded builds lock the dict for it).
"""

from __future__ import annotations

import sys
import types

__all__ = ["snapshot"]


def snapshot() -> dict[str, types.ModuleType]:
    """A private copy of ``sys.modules`` taken in one step."""
    return sys.modules.copy()
