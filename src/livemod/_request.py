"""Load on demand, as the kernel's ``request_module``: which module answers a request key.

``Host.request(key)`` is for keys that name a capability rather than a module
(``"codec:image/png"``). The answer, in order:

1. a module whose name is ``key`` (loaded, else on the modpath);
2. a module with ``key`` as a plain alias (the config's ``[aliases]`` first);
3. the most specific alias *pattern* that matches ``key`` (fnmatch syntax, case-sensitive),
   of the loaded modules, then of the modpath (from its depmod index): the pattern with the
   most literal characters wins, then the one with fewer wildcards, then search order --
   so ``codec:image/png`` beats ``codec:image/*``, which beats ``codec:*``.

Blacklisted modules (the config's ``blacklist``) are never the answer, as for modprobe.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from typing import TYPE_CHECKING

from ._names import canonical
from ._version import is_pattern
from .errors import ModuleNotFound

if TYPE_CHECKING:
    from ._modpath import ModPath
    from ._table import ModuleTable
    from .config import Config

__all__ = ["resolve"]


def _specificity(pattern: str) -> tuple[int, int]:
    wild = sum(pattern.count(c) for c in "*?[")
    literal = len(pattern) - wild - sum(len(part) for part in _sets(pattern))
    return (literal, -wild)


def _sets(pattern: str) -> Iterable[str]:
    # The insides of [...] sets match one character each: not literal text.
    while "[" in pattern and "]" in pattern.split("[", 1)[1]:
        inner, pattern = pattern.split("[", 1)[1].split("]", 1)
        yield inner + "]"


def resolve(key: str, config: Config | None, table: ModuleTable, modpath: ModPath) -> str:
    """The name of the module that should answer ``key`` (see the module docstring).

    Raises:
        ModuleNotFound: ``key`` is blacklisted, or nothing matches it; the message lists
            the alias patterns known, so a typo in a key or a pattern shows.
    """
    key = canonical(key)  # as Python reads it: a look-alike of a blacklisted name is that name
    banned = set(config.blacklist) if config is not None else set()
    if config is not None and config.is_blacklisted(key):
        config.modprobe_plan(key)  # raises ModuleNotFound, naming the blacklist
    target = config.resolve(key) if config is not None else key
    loaded = table.find(target)
    if loaded is not None:
        return loaded.name
    found = modpath.find(target)
    if found is not None and found.name not in banned:
        return found.name
    candidates = [(p, inst.name) for inst in table.everyone_unlocked()
                  for p in inst.info.aliases if is_pattern(p)]
    candidates += [(p, info.name) for p, info in modpath.patterns()]
    matches = [(p, n) for p, n in candidates if n not in banned and fnmatch.fnmatchcase(key, p)]
    if not matches:
        known = ", ".join(sorted({f"{p} ({n})" for p, n in candidates})) or "none"
        raise ModuleNotFound(
            f"no module, alias or alias pattern matches {key!r} (alias patterns on this host "
            f"and its modpath: {known}); check the key, or add a pattern to a module's "
            f"aliases", module=key,
        )
    best = max(_specificity(p) for p, _ in matches)
    return next(n for p, n in matches if _specificity(p) == best)
