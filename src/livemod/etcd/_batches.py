"""The batches of a rollout: pick machines, ask them, decide once, wait for them to commit.

A batch is ``batch/<rid>/<k>`` naming its machines, the change and a deadline. Each
machine's agent prepares all its workers and writes ``vote/<rid>/<k>/<id>``. The batch is
decided when every member has voted or is gone (its lease expired: it is excluded, and
catches up when it comes back), or at the deadline:

- **commit** if every remaining member voted yes (at least one) and they would all end
  with the set the desired record names;
- **abort** otherwise (a no, a member still registered but silent at the deadline).

The decision goes to ``decision/<rid>/<k>`` with create-once (``create_revision == 0``): a
prepared agent that waited past the deadline may have written abort first, and then that
holds. Only then is the rollout record updated. A commit waits for its machines to report
the new generation (bounded by the deadline again) before the next batch starts, so the
canary really serves the change before anyone else takes it.

Machines are taken in the order of their ids. A machine not at the rollout's base
generation (behind), or whose workers are drifted (changed by hand through a socket), is
not put in a batch; the rollout names it at the end.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

from ..errors import EngineUnreachable, RolloutError
from ._client import EngineError, EtcdClient, put_op
from ._lock import Lock
from ._options import Options
from ._records import Keys, dump, load
from ._watch import Compacted, Watch

__all__ = ["run"]


class Rollout(Protocol):
    """What the batches need of the coordinator (``_rollout.Rollout``, which imports
    this file)."""

    client: EtcdClient
    keys: Keys
    lock: Lock | None

    def say(self, line: str) -> None: ...
    def machines(self) -> dict[str, dict[str, Any]]: ...
    def history_record(self, generation: int) -> dict[str, Any]: ...


def _doorbell(ro: Rollout, watch: Watch | None, seconds: float) -> Watch | None:
    """Wait up to ``seconds`` for any change under the service's keys."""
    try:
        if watch is None:
            watch = Watch(ro.client, ro.keys.root)
        watch.wait(seconds)
        return watch
    except (EngineUnreachable, EngineError, Compacted):
        if watch is not None:
            watch.close()
        time.sleep(min(seconds, 0.5))
        return None


#: Seconds after an outage of the engine before a member without a registration counts as
#: gone: agents register again within a second of the engine answering (their lease loop
#: retries every 0.2 s); this leaves room for a loaded machine.
_REREGISTER = 10.0


def _retrying(ro: Rollout, what: str, fn: Any, limit: float = 120.0,
              outages: list[float] | None = None) -> Any:
    """``fn()``, retried with back-off while the engine is unreachable (up to ``limit``);
    the time the engine answered again after an outage is appended to ``outages``."""
    delay, end, told = 0.2, time.monotonic() + limit, False
    while True:
        try:
            result = fn()
            if told and outages is not None:
                outages.append(time.monotonic())
            return result
        except EngineUnreachable as exc:
            if time.monotonic() > end:
                raise
            if not told:
                ro.say(f"engine unreachable while {what}; retrying ({exc})")
                told = True
            time.sleep(delay)
            delay = min(delay * 2, 3.0)


def _collect(ro: Rollout, rid: str, k: int, members: list[str], deadline: float
             ) -> tuple[dict[str, dict[str, Any]], set[str]]:
    """Wait for the members' votes; (votes by machine, machines still registered).

    A member whose registration is missing is gone -- unless the engine was just away: an
    outage longer than the agents' lease expires every lease at once, and the agents need a
    moment to register again. So after an outage, missing members are waited for for
    ``_REREGISTER`` seconds (within the deadline) before they count as gone.
    """
    watch: Watch | None = None
    outages: list[float] = []
    try:
        while True:
            if ro.lock is not None:
                ro.lock.check()
            kvs, _ = _retrying(ro, "collecting votes", lambda: ro.client.range(
                ro.keys.votes(rid, k), prefix=True), outages=outages)
            votes = {kv.key.rsplit("/", 1)[-1]: load(kv, "vote") or {} for kv in kvs}
            alive = set(_retrying(ro, "listing machines", ro.machines, outages=outages))
            settled = not outages or time.monotonic() > outages[-1] + _REREGISTER
            if (all(m in votes or (m not in alive and settled) for m in members)
                    or time.time() > deadline):
                return votes, alive
            watch = _doorbell(ro, watch, min(0.5, max(0.05, deadline - time.time())))
    finally:
        if watch is not None:
            watch.close()


def _decide(ro: Rollout, rollout: dict[str, Any], k: int, members: list[str],
            deadline: float) -> tuple[dict[str, Any], list[str], list[str], list[str]]:
    """(the decision that holds, machines that said yes, no/silent, excluded)."""
    rid = rollout["id"]
    votes, alive = _collect(ro, rid, k, members, deadline)
    yes, refused, gone, lines = [], [], [], []
    wanted = [(m["name"], m["version"], m["sha256"])
              for m in ro.history_record(rollout["generation"]).get("modules", ())]
    for m in members:
        vote = votes.get(m)
        if vote is None:
            if m in alive:
                refused.append(m)
                lines.append(f"machine {m}: no vote by the deadline")
            else:
                gone.append(m)
                lines.append(f"machine {m}: its lease expired: excluded from the batch")
        elif not vote.get("ok"):
            refused.append(m)
            lines.append(f"machine {m}: no: {vote.get('error')}")
        else:
            after = [(s["name"], s["version"], s["sha256"]) for s in vote.get("after", ())]
            if after != wanted:
                refused.append(m)
                lines.append(f"machine {m}: would end with " + ", ".join(
                    f"{n} {v}" for n, v, _ in after) + ", not the desired set")
            else:
                yes.append(m)
                lines.append(f"machine {m}: yes")
    outcome = "commit" if yes and not refused else "abort"
    reason = "; ".join(lines) if outcome == "abort" else ""
    if not yes and not refused:
        reason = "every machine of the batch was excluded (leases expired)"
    wrote, held = _retrying(ro, "writing the decision", lambda: ro.client.create(
        ro.keys.decision(rid, k), dump({"outcome": outcome, "by": "coordinator",
                                        "reason": reason, "machines": yes,
                                        "excluded": gone, "votes": lines})))
    decision = {"outcome": outcome, "reason": reason, "votes": lines}
    if not wrote:
        decision = load(held, "decision record") or decision
        decision.setdefault("votes", lines)
    return decision, yes, refused, gone


def _await_generation(ro: Rollout, machines: list[str], generation: int, deadline: float
                      ) -> list[str]:
    """Wait until ``machines`` report ``generation`` in step (or are gone); the late."""
    watch: Watch | None = None
    late = list(machines)
    try:
        while late and time.time() < deadline:
            found = _retrying(ro, "waiting for the batch to commit", ro.machines)
            late = [m for m in machines if m in found and not (
                found[m].get("generation") == generation and not found[m].get("drift")
                and found[m].get("state") == "idle")]
            if late:
                watch = _doorbell(ro, watch, 0.5)
        return late
    finally:
        if watch is not None:
            watch.close()


def _batch(ro: Rollout, rollout: dict[str, Any], options: Options, k: int,
           members: list[str], deadline: float, *, canary: bool = False) -> bool:
    """Run batch ``k`` (already written) to its decision; True if it committed."""
    started = time.monotonic()
    decision, yes, refused, gone = _decide(ro, rollout, k, members, deadline)
    entry = rollout["batches"][k]
    entry.update(outcome=decision.get("outcome"), reason=decision.get("reason", ""),
                 excluded=gone, seconds=round(time.monotonic() - started, 3))
    committed = decision.get("outcome") == "commit"
    if committed:
        rollout["committed"] = [*rollout["committed"], *yes]
    else:
        rollout["failed"] = [*rollout["failed"], *refused]
    _retrying(ro, "recording the batch", lambda: ro.client.put(ro.keys.rollout, dump(rollout)))
    name = "canary" if canary else f"batch {k}"
    if committed:
        late = _await_generation(ro, yes, int(rollout["generation"]),
                                 time.time() + options.progress_deadline)
        entry["seconds"] = round(time.monotonic() - started, 3)
        ro.say(f"{name}: {', '.join(members)}: committed in {entry['seconds']:.2f}s"
               + (f" (excluded: {', '.join(gone)})" if gone else "")
               + (f" (not yet reporting it: {', '.join(late)})" if late else ""))
    else:
        ro.say(f"{name}: {', '.join(members)}: aborted: {decision.get('reason')}")
        entry["votes"] = decision.get("votes", [])
    return committed


def run(ro: Rollout, rollout: dict[str, Any], options: Options) -> dict[str, Any]:
    """Run ``rollout`` from its current batch to the end; returns its final record.

    Raises:
        RolloutError: the rollout stopped (aborted or halted); ``votes`` says why.
    """
    rid, generation, base = rollout["id"], int(rollout["generation"]), int(rollout["base"])
    started = time.monotonic()
    k = int(rollout.get("current", -1))
    if k >= 0 and not rollout["batches"][k].get("outcome"):
        _take_over(ro, rollout, options, k)
    size = None
    while True:
        if ro.lock is not None:
            ro.lock.check()
        machines = _retrying(ro, "listing machines", ro.machines)
        if size is None:
            size = options.batch_size(len(machines))
        done = set(rollout["committed"]) | set(rollout["failed"])
        pending = [m for m in sorted(machines) if m not in done
                   and machines[m].get("generation") == base and not machines[m].get("drift")]
        if not pending:
            left = sorted(m for m in machines if m not in done)
            if left:
                ro.say(f"not moved: {', '.join(left)} (behind, or drifted: changed by hand; "
                       f"see rollout status; they follow once in step)")
            break
        k += 1
        first = not any(b.get("outcome") == "commit" for b in rollout["batches"])
        canary = first and options.canary > 0
        members = pending[:options.canary if canary else size]
        deadline = time.time() + options.progress_deadline
        batch = {"rollout": rid, "k": k, "machines": members, "change": rollout["change"],
                 "generation": generation, "base": base, "deadline": deadline}
        rollout["current"] = k
        rollout["batches"].append({"machines": members, "outcome": "", "reason": ""})
        ops = [put_op(ro.keys.batch(rid, k), dump(batch)),
               put_op(ro.keys.rollout, dump(rollout))]
        _retrying(ro, "writing the batch", lambda: ro.client.txn([], ops))  # noqa: B023
        if not _batch(ro, rollout, options, k, members, deadline, canary=canary):
            failures = sum(1 for b in rollout["batches"]
                           if b.get("outcome") == "abort" and not b.get("retried"))
            if canary or failures > options.max_failed:
                return _stop(ro, rollout, options, k, canary=canary)
    rollout["state"] = "done"
    rollout["ended"] = time.time()
    rollout["seconds"] = round(time.monotonic() - started, 3)
    _retrying(ro, "recording the end", lambda: ro.client.put(ro.keys.rollout, dump(rollout)))
    ro.say(f"generation {generation}: done on {len(rollout['committed'])} machine(s) in "
           f"{rollout['seconds']:.2f}s" + (f"; failed: {', '.join(rollout['failed'])}"
                                            if rollout["failed"] else ""))
    return rollout


def _take_over(ro: Rollout, rollout: dict[str, Any], options: Options, k: int) -> None:
    """``resume`` of batch ``k``, left undecided in the record by a coordinator that died:
    a recorded commit is taken as it is; an abort that a machine wrote because nobody
    decided is no failure of the change, so the batch is marked retried and its machines
    (still at the base generation) go into the next one; with no decision at all, the batch
    is decided now, as it would have been."""
    rid = rollout["id"]
    found = load(ro.client.get(ro.keys.decision(rid, k)), "decision record")
    entry = rollout["batches"][k]
    if found is None:
        batch = load(ro.client.get(ro.keys.batch(rid, k)), "batch record") or {}
        canary = options.canary > 0 and not any(
            b.get("outcome") == "commit" for b in rollout["batches"])
        if not _batch(ro, rollout, options, k, list(batch.get("machines", ())),
                      float(batch.get("deadline", time.time())), canary=canary):
            _stop(ro, rollout, options, k, canary=canary)
        return
    entry.update(outcome=found.get("outcome"), reason=found.get("reason", ""))
    if found.get("outcome") == "commit":
        rollout["committed"] = [*rollout["committed"], *found.get("machines", ())]
    else:
        entry["retried"] = True
        ro.say(f"batch {k}: aborted while no coordinator ran ({found.get('by')}): "
               f"retrying its machines")
    ro.client.put(ro.keys.rollout, dump(rollout))


def _stop(ro: Rollout, rollout: dict[str, Any], options: Options, k: int, *,
          canary: bool) -> dict[str, Any]:
    any_commit = any(b.get("outcome") == "commit" for b in rollout["batches"])
    rollout["state"] = "halted" if any_commit else "aborted"
    rollout["ended"] = time.time()
    _retrying(ro, "recording the stop", lambda: ro.client.put(ro.keys.rollout, dump(rollout)))
    votes = tuple(rollout["batches"][k].get("votes", ()))
    where = ("every machine keeps generation " + str(rollout["base"]) if not any_commit else
             f"machines {', '.join(rollout['committed'])} run generation "
             f"{rollout['generation']}, the others generation {rollout['base']}: "
             f"rollout resume, or rollout undo")
    raise RolloutError(f"rollout {rollout['id']} {rollout['state']}: batch {k} aborted "
                       f"({options.max_failed} failed batch(es) allowed"
                       f"{'; the canary must pass' if canary else ''}); "
                       f"{where}", votes=votes)

