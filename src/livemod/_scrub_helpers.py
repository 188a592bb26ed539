"""The small shared steps of the registry scrubbers (``_scrub_registries``): finding the
module's entries by identity, and the cheap looks that rule a registry out before its
exact pass runs."""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable
from typing import Any

from ._scrub import Scrub
from ._scrub_seen import remember, seen

__all__ = ["_drop_added", "_drop_keys", "_none_owned_seen", "_remove_identity", "_unchanged"]


def _drop_added(s: Scrub, key: str, d: dict[str, Any], skip: Callable[[str], bool]) -> list[str]:
    """Delete the entries of ``d`` that are new since the load and the module's; return their
    keys. One it rebound is left: what it replaced is not known here (one replaced during
    the load was put back already, by ``_installed_modules``), and deleting ``print`` would
    be worse than the leak the report names."""
    before: dict[str, int] = s._before.get(key) or {}
    if len(d) == len(before) and all(map(operator.is_, d, before)):
        return []  # the very same names in the same order (str keys kept alive by before)
    added = [k for k in list(d) if type(k) is str and k not in before]
    gone = [k for k in added if not skip(k) and s.owns(d.get(k))]
    for k in gone:
        d.pop(k, None)
    return gone


def _none_owned_seen(s: Scrub, label: str, objects: list[Any]) -> bool:
    """Whether none of these objects is the module's: the cheap look most unloads end with,
    before a registry's own, exact pass runs. Skipped when these very objects were found
    clean by an earlier look (``_scrub_seen``); otherwise one ``Owner.sift`` for every
    loaded module, remembered when it finds nothing, and ``owns`` asked of what it found."""
    return seen(label, objects) or not any(map(s.owns, remember(label, objects)))


def _remove_identity(items: list[Any], pred: Callable[[Any], bool]) -> list[Any]:
    """Remove from ``items`` (in place, by position) every entry ``pred`` accepts."""
    gone = [item for item in list(items) if pred(item)]
    for item in gone:
        for i, existing in enumerate(items):
            if existing is item:
                del items[i]
                break
    return gone


def _drop_keys(d: dict[Any, Any], pred: Callable[[Any, Any], bool]) -> list[Any]:
    """Delete the entries ``pred(key, value)`` accepts, without hashing or comparing an
    owned key (its metaclass may define ``__hash__``/``__eq__``): the dict is rebuilt from
    the entries that stay when a key's type is not an ordinary one."""
    gone = [k for k, v in list(d.items()) if pred(k, v)]
    if not gone:
        return gone
    if all(type(k) is str or type(k) is int or type(k) is tuple for k in gone):
        for k in gone:
            d.pop(k, None)
    else:
        keep = [(k, v) for k, v in list(d.items()) if not any(k is g for g in gone)]
        d.clear()
        d.update(keep)
    return gone


def _unchanged(s: Scrub, keys: Iterable[str], now: Iterable[Any]) -> bool:
    """Whether these slots still hold, by identity, what the load's baseline saw before
    the module's body ran -- objects older than the module, so none of them its own."""
    return all(map(operator.is_, now, map(s._before.get, keys)))
