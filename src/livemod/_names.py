"""Module names as Python reads them: NFKC.

Python normalises identifiers to NFKC when it reads source, so ``from livemod.mods.greet
import x`` written with a fullwidth g (U+FF47) imports ``greet``. A module declaring that
look-alike name could never be imported by it, and would load beside ``greet`` as if it
were another module. So a declared name must already be in NFKC form (the manifest
refuses others, naming the form Python would read), and every name looked up -- an
argument of a host method, a name sent over the control socket -- is normalised first,
so a look-alike finds the module Python would find. Aliases, ``depends`` entries and
configuration names are ASCII by their own syntax, which NFKC leaves alone.
"""

from __future__ import annotations

import unicodedata

__all__ = ["canonical", "nfkc_problem"]


def canonical(name: str) -> str:
    """``name`` as Python would read it in an import statement."""
    return name if name.isascii() else unicodedata.normalize("NFKC", name)


def nfkc_problem(name: str) -> str | None:
    """Why ``name`` cannot be a declared module name, or None if it can."""
    normal = canonical(name)
    if normal == name:
        return None
    return (f"{name!r} is read by Python as {normal!r} (identifiers are NFKC-normalised), "
            f"so an import of it would reach module {normal!r}: write {normal!r}")
