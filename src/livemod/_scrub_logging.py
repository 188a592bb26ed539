"""The logging registry's scrubber (``_scrub_registries`` runs it with the others).

A process has a logger per library module that asked for one (``getLogger(__name__)``:
in a host of 400 modules, 400 of them and more), and every unload looks through all of
them. So the look is built for many loggers and few handlers:

* everything the exact pass could take out -- each logger, the loggers placeholders wait
  for, each logger's parent, filters and handlers, each handler's formatter and filters --
  is gathered in C-level passes over the loggers (only handlers, which are few, one by one);
* a module's loggers are found by name (``livemod.mods.<tag>.<name>...``), and are taken out
  by key;
* whether any gathered *object* is the module's is one ``sift`` (one look per type:
  loggers and handlers are almost always logging's own classes), skipped altogether when
  these very objects were found clean before (``_scrub_seen``). Only if one is does the
  exact pass run, which asks of every logger and handler in turn.

A module that only named loggers -- the common case -- so costs a few passes over the
loggers, where asking ``owns`` of each logger, handler and filter cost 3.4 ms of every
unload in a host of 400 modules with a logger each.
"""

from __future__ import annotations

import logging
import operator
from itertools import chain, repeat
from typing import Any, Final

from ._nsget import ns_get
from ._owned import attrs_of, class_qualname
from ._scrub import Scrub
from ._scrub_helpers import _drop_keys, _none_owned_seen, _remove_identity

__all__ = ["_logging"]

_PLACEHOLDER: Final = logging.PlaceHolder
_INSTANCE_DICT: Final = object.__getattribute__  # as attrs_of reads it


def _logging(s: Scrub) -> None:
    manager = logging.Logger.manager
    with logging._lock:  # type: ignore[attr-defined]
        loggers: dict[str, Any] = manager.loggerDict
        private = s.private_name
        # Its loggers by name first, exactly (the keys are exact strings): what hangs on
        # them goes with them, so the look below is of the loggers that stay -- the same
        # from one unload to the next, however often the module is loaded again.
        for name in [n for n in loggers if type(n) is str and private in n and s.owns_name(n)]:
            loggers.pop(name, None)
            s.removed(f"logger {s._owner.public(name)!r}")
        named_waiting, found = _gather(s, manager.root, loggers)
        if named_waiting:
            doomed = set(map(id, named_waiting))
            for value in list(loggers.values()):
                if type(value) is _PLACEHOLDER:
                    for lg in [lg for lg in list(value.loggerMap) if id(lg) in doomed]:
                        value.loggerMap.pop(lg, None)
        # Nothing gathered is the module's (the common case): nothing more to do.
        if not _none_owned_seen(s, "logging", found):
            _exact(s, manager, loggers)


def _gather(s: Scrub, root: Any, loggers: dict[str, Any]) -> tuple[list[Any], list[Any]]:
    """(the module's loggers placeholders wait for, everything ``_exact`` looks at
    besides), in one order for the same loggers (``seen`` compares by position)."""
    found: list[Any] = [root, *loggers.values()]
    kinds = list(map(type, found))
    named: list[Any] = []
    if any(map(operator.is_, kinds, repeat(_PLACEHOLDER))):
        real = [lg for lg, k in zip(found, kinds, strict=True) if k is not _PLACEHOLDER]
        # Each placeholder lists every logger below it: the same loggers, once each.
        waiting = list({id(lg): lg for p, k in zip(found, kinds, strict=True)
                        if k is _PLACEHOLDER for lg in list(p.loggerMap)}.values())
        private = s.private_name
        for lg, n in zip(waiting, map(dict.get, _dicts(waiting), repeat("name")), strict=True):
            if type(n) is str and private in n and s.owns_name(n):
                named.append(lg)
            else:
                found.append(lg)
    else:
        real = list(found)
    dicts = _dicts(real)
    found += map(dict.get, dicts, repeat("parent"))
    found += _flat(map(dict.get, dicts, repeat("filters")))
    for h in _flat(map(dict.get, dicts, repeat("handlers"))):
        h_attrs = attrs_of(h)
        found.append(h)
        found.append(h_attrs.get("formatter"))
        found += _listed(h_attrs.get("filters"))
    return named, found


def _dicts(objects: list[Any]) -> list[dict[str, Any]]:
    """``attrs_of`` of each object, in one C-level pass where every one has a plain dict."""
    try:
        found = list(map(_INSTANCE_DICT, objects, repeat("__dict__")))
    except AttributeError:
        return list(map(attrs_of, objects))
    if all(map(operator.is_, map(type, found), repeat(dict))):
        return found
    return list(map(attrs_of, objects))


def _flat(values: Any) -> list[Any]:
    """The items of those values that are lists (anything else is not looked into: its
    iteration could run a module's code), flattened."""
    values = list(values)
    if all(map(operator.is_, map(type, values), repeat(list))):
        return list(chain.from_iterable(values))  # the common case, in C
    return [x for v in values for x in _listed(v)]


def _listed(value: Any) -> list[Any]:
    return list(value) if type(value) is list else []


def _exact(s: Scrub, manager: Any, loggers: dict[str, Any]) -> None:
    """The whole pass: something the module made is attached to a logger or handler."""
    removed = _drop_keys(loggers, lambda k, v: s.owns_name(k) or s.owns(v))
    for name in removed:
        s.removed(f"logger {s._owner.public(name)!r}")
    for value in list(loggers.values()):
        if type(value) is _PLACEHOLDER:
            for lg in list(value.loggerMap):
                if s.owns(lg) or s.owns_name(ns_get(vars(lg), "name")):
                    value.loggerMap.pop(lg, None)
    everyone: list[Any] = [manager.root, *loggers.values()]
    for lg in everyone:
        if type(lg) is _PLACEHOLDER or s.owns(lg):
            continue
        _scrub_filterer(s, lg, f"logger {lg.name!r}")
        for h in _remove_identity(lg.handlers, lambda h: _handler_is_theirs(s, h)):
            s.removed(f"logging handler {s._owner.describe(h)} on logger {lg.name!r}")
        for h in lg.handlers:
            if not s.owns(h):
                _scrub_filterer(s, h, f"handler {class_qualname(type(h))} on {lg.name!r}")
    parent_fix = [lg for lg in loggers.values()
                  if type(lg) is not _PLACEHOLDER and s.owns(lg.parent)]
    for lg in parent_fix:
        lg.parent = manager.root


def _handler_is_theirs(s: Scrub, h: Any) -> bool:
    if s.owns(h):
        return True
    fmt = ns_get(vars(h), "formatter")  # not .get: see _nsget
    return fmt is not None and s.owns(fmt)


def _scrub_filterer(s: Scrub, target: Any, label: str) -> None:
    filters = ns_get(vars(target), "filters")
    if type(filters) is list:
        for f in _remove_identity(filters, s.owns):
            s.removed(f"logging filter {s._owner.describe(f)} on {label}")
