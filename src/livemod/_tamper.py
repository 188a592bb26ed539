"""Noticing a module that rebinds livemod's own public names or patches its classes.

Module code runs in the host's process and can reach livemod like any other module. A
baseline of the public names (``livemod.Host``) and of every public class's attributes
(``livemod.Host.rmmod``) is taken when the first host is made; after each load, failed load
and exit the host compares, puts back what changed, and taints itself. Private internals
are not covered: code that sets out to subvert the process cannot be stopped from inside it.
"""

from __future__ import annotations

import gc
import itertools
import operator
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

    __slots__ = ("_attrs", "_dicts", "_keys", "_names", "_values")

    def __init__(self) -> None:
        livemod = _package()
        self._names = {k: getattr(livemod, k) for k in livemod.__all__}
        self._attrs = {k: dict(vars(obj)) for k, obj in self._names.items()
                       if isinstance(obj, type)}
        # For the fast check: each class's own attribute dict (what ``vars`` is a proxy
        # of; a class keeps the same one for life), and the names and values as first seen.
        self._dicts = [gc.get_referents(vars(self._names[k]))[0] for k in self._attrs]
        self._keys = list(itertools.chain.from_iterable(self._dicts))
        self._values = [*self._names.values(), *itertools.chain.from_iterable(
            d.values() for d in self._attrs.values())]

    def _resnapshot(self) -> None:
        # A restored attribute goes to the end of its dict, and the fast check compares in
        # the dicts' order: take its view again, from one read of the dicts, and only if
        # that read is the baseline by name (another thread may be patching meanwhile).
        items = [list(d.items()) for d in self._dicts]
        for now, original in zip(items, self._attrs.values(), strict=True):
            if len(now) != len(original) or any(
                    original.get(attr, _ABSENT) is not value for attr, value in now):
                return  # changed again: the next check takes the long way
        self._keys = [attr for now in items for attr, _ in now]
        self._values = [*self._names.values(), *(value for now in items for _, value in now)]

    def _intact(self) -> bool:
        """Whether nothing changed, in a few C-level passes (this runs after every load).

        Values are compared by identity (``operator.is_``: no ``__eq__`` a module may have
        planted runs), and the baseline keeps them alive, so an equal id cannot be another
        object. A class's attribute names are exact strings (``type.__setattr__`` makes
        them so), so comparing them with ``==`` runs no module code either. The values of
        a dict whose keys are all strings are what ``gc.get_referents`` gives, in order.
        (Counts and values alone would miss a tail of attributes deleted and set again
        under other names -- after a restore, the restored ones are that tail.)
        """
        livemod = _package()
        now = [*map(livemod.__dict__.get, self._names), *gc.get_referents(*self._dicts)]
        return (len(now) == len(self._values) and all(map(operator.is_, now, self._values))
                and list(itertools.chain.from_iterable(self._dicts)) == self._keys)

    def restore(self) -> list[str]:
        """Put back whatever differs from the baseline; return what it was."""
        if self._intact():
            return []  # the common case
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
        self._resnapshot()
        return changed
