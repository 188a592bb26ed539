"""One machine's part in one batch: prepare every local worker, vote, obey the decision.

The machine's workers are one :class:`~livemod.service.Coordinator` transaction: they all
prepare (the change staged, nothing switched), and the machine votes yes only if all of
them did. Then the agent waits for the batch's decision in etcd -- written once, by the
coordinator at the latest at the batch's deadline, or by a prepared agent that waited
:data:`GRACE` seconds past it (an abort; if a commit was written first, that holds).
The local decision follows the engine's: commit only if the batch committed and every
local worker said yes. If the engine cannot be read until the workers' hold is nearly
over, the machine aborts locally (its workers would have by themselves); a batch that did
commit meanwhile is caught up to by the next reconcile.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Protocol

from ..errors import EngineUnreachable, LivemodError
from ..service import Coordinator, Decision, Transaction, Vote, read_desired
from ._client import EngineError, EtcdClient
from ._records import Keys, dump, load, specs_json
from ._watch import Compacted, Watch

__all__ = ["GRACE", "take_part"]

_log = logging.getLogger("livemod.etcd")


class Agent(Protocol):
    """What a batch needs of the agent (``_agent.Agent``, which imports this file)."""

    client: EtcdClient
    keys: Keys
    machine: str
    service: str

    def _set(self, state: str | None = None, *, engine: str | None = None,
             error: str | None = None) -> None: ...
    def _unreachable(self, exc: BaseException) -> None: ...
    def report(self) -> None: ...
    def local_operation(self, change: dict[str, Any]) -> tuple[str, dict[str, Any]]: ...
    def abort_locally(self, txn: str, reason: str) -> Decision: ...
#: Seconds after a batch's deadline before a prepared agent writes abort by itself.
GRACE = 3.0
#: Seconds a prepared worker waits past the decision deadline before it aborts by itself.
_HOLD_MARGIN = 30.0


def _prepare(agent: Agent, local: Coordinator, batch: dict[str, Any]
             ) -> tuple[Transaction | None, list[Vote], str]:
    """Stage the change in every local worker: (transaction, votes, why not; "" = yes)."""
    current = read_desired(local.desired_path, agent.service).generation
    if current != int(batch["base"]):
        return None, [], (f"machine {agent.machine} is at generation {current}, the batch "
                          f"changes generation {batch['base']}")
    op, args = agent.local_operation(batch["change"])
    t = local.begin(op, args)
    t.generation = int(batch["generation"])  # the machine's workers take the service's
    votes = local.prepare(t)
    voters = [v for v in votes if not v.dropped]
    if not voters:
        return t, votes, "every local worker died during prepare"
    refused = [v.describe() for v in voters if not v.ok]
    return t, votes, "; ".join(refused)


def _decision(agent: Agent, rid: str, k: int, deadline: float, hold_end: float
              ) -> tuple[str, str]:
    """The batch's outcome and reason, waiting for it (see the module essay)."""
    keys, client = agent.keys, agent.client
    key = keys.decision(rid, k)
    watch: Watch | None = None
    try:
        while True:
            try:
                found = load(client.get(key), "decision record")
                if found is None and time.time() > deadline + GRACE:
                    wrote, held = client.create(key, dump({
                        "outcome": "abort", "by": f"machine {agent.machine}",
                        "reason": f"no decision by the batch's deadline (machine "
                                  f"{agent.machine} gave up waiting)"}))
                    found = None if wrote else load(held, "decision record")
                    if wrote:
                        return "abort", "no decision by the deadline"
                if found is not None:
                    agent._set(engine="reachable")
                    return str(found.get("outcome")), str(found.get("reason", ""))
                if watch is None:
                    watch = Watch(client, key, prefix=False)
                watch.wait(0.5)
            except (EngineUnreachable, EngineError, Compacted) as exc:
                if watch is not None:
                    watch.close()
                watch = None
                if isinstance(exc, LivemodError):
                    agent._unreachable(exc)
                if time.time() > hold_end - 2.0:
                    return "abort", f"the engine was unreachable until the hold ran out ({exc})"
                time.sleep(0.2)
    finally:
        if watch is not None:
            watch.close()


def _put_vote(agent: Agent, rid: str, k: int, vote: dict[str, Any], deadline: float) -> None:
    """Write the vote, again and again while the engine is away (until the deadline): a
    prepared machine whose vote is lost to an outage would count as silent, and abort the
    batch. The put is idempotent (one key, one value)."""
    while True:
        try:
            agent.client.put(agent.keys.vote(rid, k, agent.machine), dump(vote))
            return
        except EngineUnreachable as exc:
            agent._unreachable(exc)
            if time.time() > deadline:
                return
            time.sleep(0.5)
        except LivemodError as exc:
            agent._unreachable(exc)
            return


def take_part(agent: Agent, rid: str, k: int, batch: dict[str, Any]) -> None:
    """Prepare, vote, wait for the decision and carry it out, on this machine."""
    deadline = float(batch["deadline"])
    remaining = max(1.0, deadline - time.time())
    hold = remaining + GRACE + _HOLD_MARGIN
    local = Coordinator(agent.service, vote_timeout=remaining, hold=hold)
    hold_end = time.time() + hold
    agent._set("preparing")
    agent.report()
    t: Transaction | None = None
    votes: list[Vote] = []
    try:
        t, votes, refused = _prepare(agent, local, batch)
    except EngineUnreachable as exc:
        # The engine is out, not the machine unwilling (the file could not be fetched): a
        # "no" would abort the batch for an outage the coordinator waits out. No vote, no
        # local transaction yet; the next reconcile, once etcd answers, prepares again.
        agent._unreachable(exc)
        agent._set("idle")
        return
    except LivemodError as exc:
        refused = str(exc)
    ok = t is not None and not refused
    after = next((v.after for v in votes if v.ok and not v.dropped), ())
    vote = {"machine": agent.machine, "ok": ok, "error": refused,
            "workers": [v.describe() for v in votes], "after": specs_json(after)}
    _put_vote(agent, rid, k, vote, deadline)
    agent._set("prepared" if ok else "refused")
    agent.report()
    outcome, reason = _decision(agent, rid, k, deadline, hold_end)
    if t is not None:
        if outcome == "commit" and ok:
            decision = local.decide(t)
            if decision.outcome != "commit":  # a worker went away between vote and now
                _log.error("agent %s: batch %d committed, but locally: %s", agent.machine,
                           k, decision.reason)
        else:
            decision = agent.abort_locally(t.txn, reason or f"batch {k} aborted")
        local.finish(t, decision)
        _log.info("agent %s: batch %d of rollout %s: %s", agent.machine, k, rid,
                  decision.outcome)
    agent._set("idle")
