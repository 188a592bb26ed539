"""Bring one worker to its service's desired set (Kubernetes' reconcile loop, for a host).

Modules the set does not name are removed (dependents first); each module it names is
loaded, upgraded (or downgraded) to its version and path, or has its params set, in the
set's load order. A module whose file no longer has the recorded hash is not loaded: the
worker stays behind ("drifted") and says which file changed. Failures do not stop the
rest; they are returned, one line each, and the worker reports them as its drift.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._state import State
from ..errors import LivemodError
from ._desired import DesiredSet, file_hash

if TYPE_CHECKING:
    from .. import Host

__all__ = ["reconcile"]


def reconcile(host: Host, desired: DesiredSet) -> list[str]:
    """Apply ``desired`` to ``host``; returns what could not be done (empty: in step).

    A generation-0 set (no file yet) changes nothing: the workers' own start-up set is
    the service's set until the first service-wide change.
    """
    if desired.generation == 0:
        return []
    problems: list[str] = []
    wanted = {m.name: m for m in desired.modules}
    with host._life.op_lock:
        with host._table.lock:
            loaded = [i.name for i in host._table.names.values() if i.state is State.LIVE]
        for name in reversed(loaded):  # newest first: dependents before what they use
            if name not in wanted and host._table.find(name) is not None:
                try:
                    host.rmmod(name, cascade=True)
                except LivemodError as exc:
                    problems.append(f"{name}: not in generation {desired.generation}, but "
                                    f"cannot be removed: {exc}")
        for spec in desired.modules:
            inst = host._table.find(spec.name)
            same = (inst is not None and inst.info.path == spec.path
                    and inst.info.version == spec.version)
            try:
                if not same:
                    found = file_hash(spec.path)
                    if found != spec.sha256:
                        problems.append(
                            f"{spec.name}: {spec.path} is not the file of generation "
                            f"{desired.generation} (sha256 {found[:12]}, expected "
                            f"{spec.sha256[:12]}); not loaded")
                        continue
                    if inst is None:
                        host.insmod(spec.path, **spec.params)
                    else:
                        host.replace(spec.name, spec.path, downgrade=True, cascade=True,
                                     **spec.params)
                    continue
                assert inst is not None
                current = inst.params.as_dict()
                for key, value in spec.params.items():
                    if key in current and current[key] != value:
                        host.set_param(spec.name, key, value)
            except LivemodError as exc:
                problems.append(f"{spec.name}: {exc}")
    return problems
