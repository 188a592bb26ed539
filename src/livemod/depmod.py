"""Indexing modpath folders offline, as the kernel's depmod does (no host needed).

``depmod(folder, ...)`` reads every module of the folders, saves an index in each (so a
host's ``modprobe`` finds modules by name or alias without reading them all) and reports
the modules found and the broken ones. A running host does the same with ``host.depmod()``.
"""

from __future__ import annotations

import os

from ._depmod import DepmodReport
from ._modpath import ModPath

__all__ = ["DepmodReport", "depmod"]


def depmod(*folders: str | os.PathLike[str], full: bool = False) -> DepmodReport:
    """Bring the index of each folder up to date and save it there.

    Args:
        folders: modpath folders (``<name>.py`` files and ``<name>/`` packages).
        full: read every module again, even those whose files did not change.
    """
    return ModPath([os.path.abspath(os.fspath(f)) for f in folders]).depmod(full=full)
