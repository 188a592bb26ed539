"""What reading a manifest may cost: bounds a hostile or mistaken file cannot get past.

A manifest is read before any of the module's code runs, by modinfo, depmod and every
modprobe lookup, for every file on the modpath. So its cost must stay linear in its size,
and its size must be bounded: a manifest larger than any real one (or with more entries)
is refused with a ``ManifestError`` that names the limit, before the work it would cost.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import final

__all__ = ["LIMITS", "ManifestLimits"]


@final
@dataclass(frozen=True, slots=True)
class ManifestLimits:
    """The bounds (a real manifest is a few hundred bytes, with a handful of entries)."""

    #: The ``__livemod__`` statement, from its first line to its closing brace.
    manifest_bytes: int = 64 * 1024
    #: A module whose manifest cannot be read from its head alone (the name appears more
    #: than once, a coding cookie) is parsed whole; only up to this size.
    full_parse_bytes: int = 1024 * 1024
    aliases: int = 256
    depends: int = 1024
    params: int = 1024


#: The limits in force. Replaced whole (never mutated), e.g. by the benchmark that
#: measures reading past them.
LIMITS = ManifestLimits()
