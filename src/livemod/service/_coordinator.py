"""The coordinator of a service-wide change: two-phase commit over the workers' sockets.

1. ``begin``: read the desired set (a corrupt or newer one stops here), list the workers
   (stale sockets of dead pids are removed), ask each its generation: workers at
   different generations, or behind the desired set, are refused here -- nothing changed.
2. ``prepare``: every worker, in parallel, stages the change and votes. A worker that
   does not answer within ``vote_timeout`` votes no; one whose process is gone is
   dropped (its replacement will follow the desired set).
3. ``decide``: all yes (and all would end with the same set) -> commit, else abort. The
   decision is recorded **before** any worker is told (written once: a worker that gave
   up waiting may have recorded an abort first, and then that holds). On commit the
   desired set is written with the next generation, before any commit is sent.
4. ``finish``: every prepared worker is told. A worker that does not hear it reads the
   decision record by itself.

Each step is a method, so another driver (a cross-machine agent) can run them in its own
order; :meth:`Coordinator.run` runs them all.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..control.client import ControlClient
from ..control.errors import HostUnreachable
from ..errors import LivemodError, TransactionAborted
from ._desired import (
    Decision,
    DesiredSet,
    ModuleSpec,
    read_desired,
    write_decision,
    write_desired,
)
from ._paths import WorkerSocket, decisions_dir, desired_path, pid_alive, worker_sockets

__all__ = ["Coordinator", "Outcome", "Transaction", "Vote"]

_KEEP_DECISIONS = 50


@dataclass
class Vote:
    """One worker's answer to prepare: ``ok`` (yes), or why not (``error``, ``code``);
    ``dropped`` when its process died during the transaction."""

    pid: int
    ok: bool
    error: str = ""
    code: str = ""
    after: tuple[ModuleSpec, ...] = ()
    dropped: bool = False

    def describe(self) -> str:
        if self.dropped:
            return f"pid {self.pid}: died during the transaction (dropped)"
        return f"pid {self.pid}: {'yes' if self.ok else 'no: ' + self.error}"


@dataclass
class Transaction:
    """One change in flight: its id, the op, the workers, and the generations."""

    txn: str
    op: str
    args: dict[str, Any]
    workers: list[WorkerSocket]
    base: DesiredSet
    generation: int  # the one a commit makes
    stale: list[int] = field(default_factory=list)
    votes: list[Vote] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)


@dataclass
class Outcome:
    """How a transaction ended: ``outcome`` is "commit" or "abort"; ``results`` (commit)
    maps each worker's pid to its result; ``errors`` to what went wrong telling it."""

    txn: str
    outcome: str
    generation: int
    votes: list[Vote]
    results: dict[int, Any]
    errors: dict[int, str]
    seconds: float
    reason: str = ""


def _spec_key(specs: tuple[ModuleSpec, ...]) -> list[tuple[str, str, str, str]]:
    return [(s.name, s.version, s.path, s.sha256) for s in specs]


class Coordinator:
    """Changes every worker of ``service`` all or nothing.

    Args:
        service: the service name (``Host(service=...)``).
        vote_timeout: seconds each worker has to prepare and vote.
        hold: seconds a prepared worker waits for the decision before it records an abort
            itself (default: ``vote_timeout`` + 20, so the coordinator always decides first
            unless it died).
        finish_timeout: seconds each worker has to carry out commit or abort.
        start_wait: seconds to wait for workers still loading their start-up modules
            before a change begins.
    """

    def __init__(self, service: str, *, vote_timeout: float = 10.0,
                 hold: float | None = None, finish_timeout: float = 60.0,
                 start_wait: float = 30.0) -> None:
        self.service = service
        self.vote_timeout = vote_timeout
        self.hold = vote_timeout + 20.0 if hold is None else hold
        self.finish_timeout = finish_timeout
        self.start_wait = start_wait
        self.desired_path = desired_path(service)
        self.decisions = decisions_dir(service)
        self._clients: dict[int, ControlClient] = {}

    # ------------------------------------------------------------------ queries

    def workers(self) -> tuple[list[WorkerSocket], list[int]]:
        """The live workers, and the pids of stale sockets just removed."""
        return worker_sockets(self.service)

    def ask_all(self, op: str, timeout: float = 5.0, **args: Any
                ) -> tuple[dict[int, Any], dict[int, str], list[int]]:
        """Ask every worker ``op``: (results by pid, errors by pid, stale pids removed).

        Raises:
            HostUnreachable: the service has no worker.
        """
        workers, stale = self.workers()
        self._require(workers, stale)
        results: dict[int, Any] = {}
        errors: dict[int, str] = {}

        def one(w: WorkerSocket) -> None:
            try:
                with ControlClient(w.path, timeout=timeout) as client:
                    results[w.pid] = client.call(op, **args)
            except LivemodError as exc:
                errors[w.pid] = str(exc)

        with concurrent.futures.ThreadPoolExecutor(min(32, len(workers))) as pool:
            list(pool.map(one, workers))
        return results, errors, stale

    def _require(self, workers: list[WorkerSocket], stale: list[int]) -> None:
        if not workers:
            gone = f" (removed stale sockets of dead pids {stale})" if stale else ""
            raise HostUnreachable(
                f"service {self.service!r} has no running worker in "
                f"{os.path.dirname(self.desired_path)}{gone}: are its workers started with "
                f"livemod.Host(service={self.service!r})?")

    # ------------------------------------------------------------------- steps

    def begin(self, op: str, args: Mapping[str, Any]) -> Transaction:
        """Check everything that can be checked without changing anything.

        Raises:
            DesiredSetError: the desired set is corrupt or from a newer livemod.
            HostUnreachable: no worker.
            TransactionAborted: workers at different generations, or drifted.
        """
        base = read_desired(self.desired_path, self.service)
        statuses, errors, stale = self._settled_statuses()
        if errors:
            raise TransactionAborted(
                "cannot start: some workers do not answer; nothing was changed: "
                + "; ".join(f"pid {p}: {e}" for p, e in sorted(errors.items())),
                votes=tuple(f"pid {p}: {e}" for p, e in sorted(errors.items())))
        behind = {p: s for p, s in statuses.items()
                  if s.get("generation") != base.generation or s.get("drifted")}
        if behind:
            lines = [f"pid {p}: generation {s.get('generation')}"
                     + (f" (drifted: {s.get('drift')})" if s.get("drift") else "")
                     for p, s in sorted(behind.items())]
            raise TransactionAborted(
                f"cannot start: workers are not all at the desired generation "
                f"{base.generation}; nothing was changed (wait for them to reconcile, or "
                f"restart them): " + "; ".join(lines), votes=tuple(lines))
        workers = [w for w in self.workers()[0] if w.pid in statuses]
        txn = f"{int(time.time() * 1000)}-{os.getpid()}-{secrets.token_hex(3)}"
        return Transaction(txn, op, dict(args), workers, base, base.generation + 1, stale)

    def _settled_statuses(self) -> tuple[dict[int, Any], dict[int, str], list[int]]:
        """Every worker's status, once none is still loading its start-up modules.

        A worker is on the socket list from ``Host(service=...)`` on; counting it in before
        its start-up set is loaded would abort the change for modules about to appear.
        Waits at most ``start_wait``; then the change is refused, naming the workers.
        """
        deadline = time.monotonic() + self.start_wait
        while True:
            statuses, errors, stale = self.ask_all("service")
            starting = sorted(p for p, s in statuses.items() if s.get("starting"))
            if not starting:
                return statuses, errors, stale
            if time.monotonic() >= deadline:
                lines = [f"pid {p}: still loading its start-up modules" for p in starting]
                raise TransactionAborted(
                    f"cannot start: workers have been starting for more than "
                    f"{self.start_wait:g}s; nothing was changed (retry when they are up): "
                    + "; ".join(lines), votes=tuple(lines))
            time.sleep(0.05)

    def prepare(self, t: Transaction) -> list[Vote]:
        """Every worker stages the change and votes (in parallel)."""

        def one(w: WorkerSocket) -> Vote:
            client = ControlClient(w.path, timeout=self.vote_timeout)
            self._clients[w.pid] = client
            try:
                reply = client.call("txn-prepare", txn=t.txn, operation=t.op, args=t.args,
                                    generation=t.generation, expect=t.base.generation,
                                    hold=self.hold)
            except HostUnreachable as exc:
                if not pid_alive(w.pid):
                    return Vote(w.pid, False, str(exc), exc.code, dropped=True)
                return Vote(w.pid, False, f"did not answer within {self.vote_timeout:g}s "
                            f"({exc})", exc.code)
            except LivemodError as exc:
                return Vote(w.pid, False, str(exc), exc.code)
            after = tuple(ModuleSpec(m["name"], m["version"], m["path"], m["sha256"],
                                     m.get("params", {})) for m in reply.get("after", ()))
            return Vote(w.pid, True, after=after)

        with concurrent.futures.ThreadPoolExecutor(min(32, len(t.workers))) as pool:
            t.votes = list(pool.map(one, t.workers))
        return t.votes

    def decide(self, t: Transaction) -> Decision:
        """Commit if every worker still there said yes and all would end alike; record it
        durably (written once) and, on commit, write the next desired set."""
        voters = [v for v in t.votes if not v.dropped]
        refused = [v for v in voters if not v.ok]
        reason = ""
        if not voters:
            reason = "every worker died during the transaction"
        elif refused:
            reason = "; ".join(v.describe() for v in refused)
        elif len({tuple(_spec_key(v.after)) for v in voters}) > 1:
            reason = "the workers would end with different module sets: " + "; ".join(
                f"pid {v.pid}: " + ", ".join(f"{s.name} {s.version}" for s in v.after)
                for v in voters)
        desired = None
        if not reason:
            desired = DesiredSet(self.service, t.generation, voters[0].after, t.txn)
        decision = write_decision(self.decisions, Decision(
            t.txn, "abort" if reason else "commit", "coordinator", reason, desired))
        if decision.outcome == "commit" and decision.desired is not None:
            write_desired(self.desired_path, decision.desired)
        return decision

    def finish(self, t: Transaction, decision: Decision) -> Outcome:
        """Tell every prepared worker the decision; collect what they say."""
        results: dict[int, Any] = {}
        errors: dict[int, str] = {}
        op = "txn-commit" if decision.outcome == "commit" else "txn-abort"
        # A worker that voted no has nothing to undo; one that did not answer may still
        # be preparing (it reads the decision record when it gets there).
        told = [v for v in t.votes if not v.dropped and (v.ok or decision.outcome == "abort")]
        by_pid = {w.pid: w for w in t.workers}

        def one(v: Vote) -> None:
            client = self._clients.pop(v.pid, None)
            timeout = self.finish_timeout if v.ok else min(2.0, self.finish_timeout)
            if client is None or not v.ok:
                if client is not None:
                    client.close()
                client = ControlClient(by_pid[v.pid].path, timeout=timeout)
            client.timeout = timeout
            try:
                with client:
                    results[v.pid] = client.call(op, txn=t.txn)
            except LivemodError as exc:
                errors[v.pid] = (f"did not confirm {decision.outcome} ({exc}); it carries "
                                 f"out the recorded decision by itself")

        if told:
            with concurrent.futures.ThreadPoolExecutor(min(32, len(told))) as pool:
                list(pool.map(one, told))
        for client in self._clients.values():
            client.close()
        self._clients.clear()
        self._prune()
        return Outcome(t.txn, decision.outcome, t.generation if decision.outcome == "commit"
                       else t.base.generation, t.votes, results, errors,
                       time.monotonic() - t.started, decision.reason)

    def run(self, op: str, args: Mapping[str, Any]) -> Outcome:
        """begin, prepare, decide, finish.

        Raises:
            TransactionAborted: the change was aborted everywhere (``votes`` says why).
            DesiredSetError, HostUnreachable: from ``begin``; nothing was changed.
        """
        t = self.begin(op, args)
        self.prepare(t)
        decision = self.decide(t)
        outcome = self.finish(t, decision)
        if outcome.outcome != "commit":
            raise TransactionAborted(
                f"{op} aborted in every worker of service {self.service!r}; each keeps "
                f"generation {t.base.generation}: {decision.reason or 'decided by ' + decision.by}",
                votes=tuple(v.describe() for v in t.votes))
        return outcome

    def _prune(self) -> None:
        try:
            names = sorted(n for n in os.listdir(self.decisions) if n.endswith(".json"))
        except OSError:
            return
        for name in names[:-_KEEP_DECISIONS]:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(self.decisions, name))
