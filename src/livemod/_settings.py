"""A host's settings, as the lifecycle reads them (``Host`` keeps them readable and
writable as its own attributes)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import final

__all__ = ["Settings"]


@final
@dataclass(slots=True)
class Settings:
    """What ``Host(...)`` was given that the lifecycle needs (see ``Host`` for each)."""

    modpath: list[str]
    timeout: float
    leak_check: bool
    exit_timeout: float | None
    allow_outside_modpath: bool
