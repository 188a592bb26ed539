"""All the workers of a service, all or nothing.

A worker is a host built with ``livemod.Host(service="web")``: its control socket is
``<socket dir>/web/<pid>.sock``. Once its start-up modules are loaded, :func:`start`
reconciles it to the service's desired set and keeps it following that set, so workers
forked or spawned later come up with the current modules.

A change to every worker (``livemod --service web upgrade ...``) is a :class:`Coordinator`
transaction: prepare everywhere (the change staged, the operation lock held), a decision
recorded durably, then commit or abort everywhere. Its steps are public so another driver
can run them::

    c = Coordinator("web", vote_timeout=10)
    t = c.begin("upgrade", {"name": "hello", "path": "/srv/modules/hello_v2.py"})
    votes = c.prepare(t)           # [Vote(pid, ok, error, after)]
    decision = c.decide(t)         # recorded once; commit writes the next DesiredSet
    outcome = c.finish(t, decision)

The desired set (:class:`DesiredSet`: a generation and a :class:`ModuleSpec` per module
with version, path, sha256 and params) is read with :func:`read_desired` and written
atomically with :func:`write_desired`.
"""

from __future__ import annotations

from ._coordinator import Coordinator, Outcome, Transaction, Vote
from ._desired import (
    FORMAT,
    Decision,
    DesiredSet,
    ModuleSpec,
    file_hash,
    read_decision,
    read_desired,
    write_decision,
    write_desired,
)
from ._member import Member, attach, member_of, start
from ._paths import WorkerSocket, desired_path, service_dir, socket_path, worker_sockets
from ._staging import OPS

__all__ = [
    "FORMAT",
    "OPS",
    "Coordinator",
    "Decision",
    "DesiredSet",
    "Member",
    "ModuleSpec",
    "Outcome",
    "Transaction",
    "Vote",
    "WorkerSocket",
    "attach",
    "desired_path",
    "file_hash",
    "member_of",
    "read_decision",
    "read_desired",
    "service_dir",
    "socket_path",
    "start",
    "worker_sockets",
    "write_decision",
    "write_desired",
]
