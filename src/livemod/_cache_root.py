"""livemod's cache folder, shared by the bytecode cache and the copies of native extensions.

``$LIVEMOD_CACHE_DIR``, else ``$XDG_CACHE_HOME/livemod``, else ``~/.cache/livemod``. Asked at
every load, so the answer is kept for the environment values it was made from: a changed
variable (a test's, an embedding program's) gives a new answer, an unchanged one costs
three lookups instead of ``expanduser`` and two joins.
"""

from __future__ import annotations

import os

__all__ = ["root"]

#: (LIVEMOD_CACHE_DIR, XDG_CACHE_HOME, HOME) -> the folder; replaced whole, never mutated,
#: so a reader on another thread sees one pair or the other (free-threaded builds too).
_memo: tuple[tuple[str | None, str | None, str | None], str] | None = None


def root() -> str:
    """The cache folder for the environment as it is now."""
    global _memo
    env = os.environ
    key = (env.get("LIVEMOD_CACHE_DIR"), env.get("XDG_CACHE_HOME"), env.get("HOME"))
    memo = _memo
    if memo is not None and memo[0] == key:
        return memo[1]
    explicit, xdg, _home = key
    if explicit:
        found = explicit
    else:
        found = os.path.join(xdg or os.path.join(os.path.expanduser("~"), ".cache"), "livemod")
    _memo = (key, found)
    return found
