"""Many machines: a service's desired set, batched rollouts and agents, on etcd.

Each machine runs one :class:`Agent` (``livemod agent --etcd URL --service web --machine
m1``) beside its workers; the operator's ``livemod rollout`` is the coordinator
(:class:`Rollout`). The desired set, each machine's status (on a lease), the batches,
votes and decisions (each written once) live in etcd, spoken to through its JSON gateway
on ``/v3/*`` by a small client of our own (:class:`EtcdClient`; see ``_client`` for why
not a library). The key layout and the records are described in ``_records``.

Nothing here is imported by ``import livemod``: the CLI imports this package when an
``agent`` or ``rollout`` command runs, and a host process that embeds an agent imports it
itself::

    from livemod.etcd import Agent, EtcdClient
    agent = Agent(EtcdClient("http://10.0.0.5:2379"), "web", "m1").start()
"""

from __future__ import annotations

from ._agent import Agent, applies_to
from ._client import KV, EngineError, EtcdClient
from ._plan import CHANGES
from ._records import FORMAT, Keys
from ._rollout import Options, Rollout
from ._watch import Compacted, Watch

__all__ = ["CHANGES", "FORMAT", "KV", "Agent", "Compacted", "EngineError", "EtcdClient",
           "Keys", "Options", "Rollout", "Watch", "applies_to"]
