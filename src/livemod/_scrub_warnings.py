"""The warnings registries' scrubber (``_scrub_registries`` runs it with the others).

Filters are tuples (immutable), so a filter list that is, tuple for tuple, the one last
found clean (``_scrub_seen``) is still clean, and the pass over its categories is skipped.
The once-registry and the modules' ``__warningregistry__`` are keyed by warning categories:
they are looked through only when the module defines a ``Warning`` subclass.
"""

from __future__ import annotations

import operator
import re
import types
import warnings
from itertools import compress, repeat
from typing import Any, Final

from . import _sysmodules
from ._owned import _MODULE_DICT, safe_vars
from ._scrub import Scrub
from ._scrub_helpers import _drop_keys, _remove_identity
from ._scrub_seen import remember, seen

__all__ = ["_warnings"]

_MODULE: Final = types.ModuleType


def _warnings(s: Scrub) -> None:
    filters: list[Any] = warnings.filters  # type: ignore[assignment]
    private = s.private_name

    def theirs(f: Any) -> bool:
        if type(f) is not tuple or len(f) < 5:
            return False
        category, module = f[2], f[3]
        if s.owns(category):
            return True
        pattern = module.pattern if type(module) is re.Pattern else None
        return type(pattern) is str and pattern.replace("\\", "").startswith(private)

    now, gone = list(filters), []
    if not seen("warnings", now):  # the filter tuples are immutable: the same, still clean
        categories = [f[2] for f in now if type(f) is tuple and len(f) >= 5]
        patterns = [f[3].pattern.replace("\\", "") for f in now if type(f) is tuple
                    and len(f) >= 5 and type(f[3]) is re.Pattern and type(f[3].pattern) is str]
        owned = remember("warnings", now, categories,
                         also_clean=not any("livemod.mods." in p for p in patterns))
        if any(map(s.owns, owned)) or any(private in p for p in patterns):
            gone = _remove_identity(filters, theirs)
            for f in gone:
                s.removed(f"warnings filter {f[0]!r} for {_category(s, f[2])}")
    if not s.has_classes(Warning):  # the registries below are keyed by warning categories
        return _filters_changed(gone)
    registry: dict[Any, Any] = warnings.onceregistry  # type: ignore[attr-defined]
    _drop_keys(registry, lambda k, v: type(k) is tuple and any(s.owns(p) for p in k))
    for reg in _module_registries():
        _drop_keys(reg, lambda k, v: type(k) is tuple and any(s.owns(p) for p in k))
    _filters_changed(gone)


def _module_registries() -> list[dict[Any, Any]]:
    """Every module's ``__warningregistry__``, in C-level passes over the plain modules
    (hundreds; a Python loop over them was 60-140 us of each unload of a module with a
    warning category) and one by one over the rest."""
    values = list(_sysmodules.snapshot().values())
    kinds = list(map(type, values))
    plain = compress(values, map(operator.is_, kinds, repeat(_MODULE)))
    spaces = [*map(_MODULE_DICT.__get__, plain), *(
        ns for m, k in zip(values, kinds, strict=True)
        if k is not _MODULE and type(ns := safe_vars(m)) is dict)]
    found: list[Any] = list(map(dict.get, spaces, repeat("__warningregistry__")))
    return list(compress(found, map(operator.is_, map(type, found), repeat(dict))))


def _filters_changed(gone: list[Any]) -> None:
    if gone:
        mutated = getattr(warnings, "_filters_mutated", None)
        if mutated is not None:
            mutated()


def _category(s: Scrub, cls: Any) -> str:
    return s._owner.describe(cls)
