"""What ``Host.from_config`` does after making the host: restore the state file's modules
(when one is configured), keep the file up to date from then on, and load the config's
``load`` list.

A module of the ``load`` list (or of the state file) that fails is logged (the event log
for the list, the ``livemod`` logger for the state file); the rest still load.
"""

from __future__ import annotations

import logging
from typing import Any

from ._statefile import StateFile
from .config import Config
from .errors import LivemodError

__all__ = ["restore_and_load"]

_log = logging.getLogger("livemod")


def restore_and_load(host: Any, config: Config, *, restore: bool) -> None:
    """Bring ``host`` (a new ``livemod.Host``) up to what ``config`` asks for."""
    state_file = config.host.state_file
    if state_file is not None:
        state = StateFile(state_file)
        if restore:
            report = state.restore(host)
            for failure in report.failed:
                _log.error("restoring %r from %s failed: %s", failure.name, state_file,
                           failure.error)
        host._detach_state = state.attach(host)
    for plan in config.load_plan():
        if host._table.find(plan.name) is not None:
            continue  # restored with the params it had; options apply to new loads
        try:
            host.modprobe(plan.requested)
        except LivemodError as exc:
            host._journal.event("load-failed", plan.name, f"start-up load failed: {exc}")
