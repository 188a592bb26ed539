"""The agent: one per machine, between etcd and the machine's workers.

It registers the machine under a lease (``machines/<id>``: its state, applied generation,
modules and workers) and keeps the lease alive from a thread of its own, so a long local
prepare never lets it expire. Its loop is level-triggered, as Kubernetes' controllers are:
after every wake-up (an event on the service's keys, or a tick) it re-reads the records and
acts on what they say, never on the event, so a missed or merged event never matters.
What it does, in order:

1. A batch of the running rollout names this machine and it has not voted: it runs the
   change as one local :class:`~livemod.service.Coordinator` transaction (every worker of
   the machine prepares, all or nothing), writes its vote, waits for the batch's decision
   and obeys it. If no decision comes by the batch's deadline (the coordinator died) it
   writes ``abort`` itself -- create-once, so if a commit got there first, that holds.
2. Otherwise, if the machine is not at the generation that applies to it (it was down
   during its batch, or came back after the rollout), it catches up: the generation's
   files are taken out of the engine (hash checked) and the machine's desired set is
   written, which its workers follow.

When etcd cannot be reached, nothing is unloaded or changed: the workers keep their set,
:meth:`Agent.status` says ``engine: unreachable``, and the agent retries with back-off. A
prepare in flight whose decision cannot be read by the time the workers' hold runs out
aborts locally; the next reconcile catches the machine up if the batch committed. Changes
made locally through a worker's socket meanwhile show the workers as drifted (their
generation stops matching), and the agent reports that; it does not revert them by itself
(the rollouts leave a drifted machine out, and name it, and it is not caught up either,
until it is back in step: restarted, or changed back by hand).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

from ..errors import EngineUnreachable, LivemodError
from ..service import (
    Coordinator,
    Decision,
    DesiredSet,
    ModuleSpec,
    desired_path,
    file_hash,
    read_desired,
    service_dir,
    write_decision,
    write_desired,
)
from ._batch import take_part
from ._client import EngineError, EtcdClient, kv_from, range_op
from ._files import fetch_file, put_file
from ._plan import local_operation
from ._records import Keys, dump, load, specs_from
from ._watch import Compacted, Watch

__all__ = ["Agent", "applies_to"]

_log = logging.getLogger("livemod.etcd")


def applies_to(machine: str, desired: dict[str, Any] | None,
               rollout: dict[str, Any] | None) -> int:
    """The generation machine ``machine`` should be at: the desired one, except during a
    rollout that has not reached it (then the one the rollout started from)."""
    if desired is None:
        return 0
    generation = int(desired.get("generation", 0))
    if rollout is None or rollout.get("generation") != generation or \
            rollout.get("state") == "done":
        return generation
    if machine in rollout.get("committed", ()):
        return generation
    return int(rollout.get("base", 0))


class Agent:
    """Bridge etcd and this machine's workers of ``service``.

    Args:
        client: the etcd client.
        service: the service name (the workers' ``Host(service=...)``).
        machine: this machine's id, unique in the service.
        prefix: the key prefix (default ``/livemod``).
        ttl: seconds of the machine's lease (a dead agent drops out after about this).
        cache: where module files from the engine are kept (default: a folder per
            service and machine in the temp folder).
        tick: seconds between re-reads when nothing happens.
    """

    def __init__(self, client: EtcdClient, service: str, machine: str, *,
                 prefix: str = "/livemod", ttl: int = 10, cache: str | None = None,
                 tick: float = 5.0) -> None:
        if not machine or "/" in machine:
            raise LivemodError(f"machine id {machine!r} is not usable: give a non-empty "
                               f"name without '/' (--machine)")
        self.client, self.service, self.machine = client, service, machine
        self.keys = Keys(prefix, service)
        self.ttl, self.tick = ttl, tick
        self.cache = cache or os.path.join(tempfile.gettempdir(),
                                           f"livemod-files-{os.geteuid()}", service, machine)
        self.local = Coordinator(service)
        self._stop = threading.Event()
        self._wake = threading.Event()
        # lock protects: 1) _state, _engine, _error; 2) _lease
        self._lock = threading.Lock()
        self._state = "starting"
        self._engine = "unknown"
        self._error = ""
        self._lease = 0
        self._uploaded: set[str] = set()
        self._reported: dict[str, Any] = {}  # the record last put, without its time
        self._reported_lease = 0
        self._registering = threading.Lock()  # protects: the grant and put of the record
        #: The last revision reconciled; the watch goes on from it after an outage.
        self.revision = 0
        #: How many times a watch found its revision compacted (and everything was re-read).
        self.compactions = 0
        self._threads: list[threading.Thread] = []
        self.on_change: Callable[[dict[str, Any]], None] | None = None

    # --------------------------------------------------------------- running

    def start(self) -> Agent:
        """Start the lease and reconcile threads (daemons); returns self."""
        for target, name in ((self._lease_loop, "lease"), (self._loop, "reconcile")):
            thread = threading.Thread(target=target, name=f"livemod-agent-{name}",
                                      daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self, *, deregister: bool = True) -> None:
        """Stop the threads; with ``deregister``, revoke the lease (the machine's key goes
        at once instead of after its TTL). The workers keep running."""
        self._stop.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(10)
        if deregister and self._lease:
            with contextlib.suppress(LivemodError):
                self.client.revoke(self._lease)

    def status(self) -> dict[str, Any]:
        """The record this agent puts at ``machines/<id>`` (and ``livemod status`` shows)."""
        local = self._local_state()
        with self._lock:
            return {"machine": self.machine, "host": socket.gethostname(), "pid": os.getpid(),
                    "state": self._state, "engine": self._engine, "error": self._error,
                    "compactions": self.compactions, **local, "updated": time.time()}

    def _set(self, state: str | None = None, *, engine: str | None = None,
             error: str | None = None) -> None:
        with self._lock:
            if state is not None:
                self._state = state
            if engine is not None:
                self._engine = engine
            if error is not None:
                self._error = error

    # ------------------------------------------------------------ local state

    def _local_state(self) -> dict[str, Any]:
        """The workers: generation (the machine's desired set), each worker's, modules."""
        try:
            generation = read_desired(self.local.desired_path, self.service).generation
        except LivemodError as exc:
            return {"generation": -1, "drift": str(exc), "workers": {}, "modules": []}
        try:
            statuses, errors, _ = self.local.ask_all("service", timeout=5.0)
            rows, _, _ = self.local.ask_all("lsmod", timeout=5.0)
        except LivemodError as exc:
            return {"generation": generation, "drift": str(exc), "workers": {}, "modules": []}
        workers = {str(p): {"generation": s.get("generation"), "drifted": s.get("drifted"),
                            "by_hand": bool(s.get("by_hand")), "txn": s.get("txn")}
                   for p, s in statuses.items()}
        drift = [f"pid {p}: {s.get('drift') or 'generation ' + str(s.get('generation'))}"
                 for p, s in statuses.items()
                 if s.get("drifted") or s.get("generation") != generation]
        drift += [f"pid {p}: no answer: {e}" for p, e in errors.items()]
        modules = []
        if rows:
            first = rows[min(rows)]
            modules = [ModuleSpec(r["name"], r["version"], r["path"], file_hash(r["path"]),
                                  r.get("params") or {}).to_json()
                       for r in first if r.get("state") == "LIVE"]
        return {"generation": generation, "drift": "; ".join(drift), "workers": workers,
                "modules": modules}

    # ------------------------------------------------------------------ lease

    def _register(self) -> None:
        # Both threads register (the lease loop after an expiry, the reconcile loop after a
        # change): one at a time, or each could grant a lease and the record end up bound
        # to the one nobody keeps alive.
        with self._registering:
            self._register_serialized()

    def _register_serialized(self) -> None:
        record = self.status()
        with self._lock:
            lease = self._lease
        if not lease:
            lease = self.client.grant(self.ttl)
            with self._lock:
                self._lease = lease
            self._upload(record["modules"])
        same = {k: v for k, v in record.items() if k != "updated"}
        if lease == self._reported_lease and same == self._reported:
            return  # unchanged: the lease keeps the record alive, nobody needs an event
        self.client.put(self.keys.machine(self.machine), dump(record), lease=lease)
        self._reported, self._reported_lease = same, lease
        self._write_local(record)
        if self.on_change is not None:
            self.on_change(record)

    def _upload(self, modules: list[dict[str, Any]]) -> None:
        """Put the workers' current files into the engine (for undo of the first
        rollout); a file that cannot be put is skipped with a log line."""
        for m in modules:
            if m["sha256"] in self._uploaded or not os.path.isfile(m["path"]):
                continue
            try:
                put_file(self.client, self.keys, m["path"])
                self._uploaded.add(m["sha256"])
            except LivemodError as exc:
                _log.warning("agent %s: %s", self.machine, exc)

    def report(self) -> None:
        """Put the machine's record now (after each change of state)."""
        try:
            self._register()
        except LivemodError as exc:
            self._unreachable(exc)

    def _lease_loop(self) -> None:
        delay = 0.2
        while not self._stop.is_set():
            try:
                with self._lock:
                    lease = self._lease
                if not lease or self.client.keepalive(lease) <= 0:
                    with self._lock:
                        self._lease = 0  # expired (the engine was away too long): anew
                    self._register()
                    self._wake.set()
                if self._engine != "reachable":
                    self._set(engine="reachable", error="")
                    self._register()
                    self._wake.set()
                delay = 0.2
                self._stop.wait(max(0.2, self.ttl / 3))
            except LivemodError as exc:
                self._unreachable(exc)
                self._stop.wait(delay)
                delay = min(delay * 2, 5.0)

    def _unreachable(self, exc: BaseException) -> None:
        if self._engine != "unreachable":
            _log.warning("agent %s: engine unreachable, the workers keep their set: %s",
                         self.machine, exc)
        self._set(engine="unreachable", error=str(exc))
        with contextlib.suppress(LivemodError, OSError):
            self._write_local(self.status())

    def _write_local(self, record: dict[str, Any]) -> None:
        """``<service dir>/agent.json``: what ``livemod --service NAME status`` shows of the
        engine (reachable or not), written atomically."""
        folder = service_dir(self.service, create=True)
        data = json.dumps({**record, "etcd": self.client.url}).encode()
        fd, temp = tempfile.mkstemp(dir=folder, prefix=".agent-")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(temp, os.path.join(folder, "agent.json"))

    # ------------------------------------------------------------- reconcile

    def _loop(self) -> None:
        delay = 0.2
        watch: Watch | None = None
        while not self._stop.is_set():
            try:
                if watch is None and self.revision:
                    # On from the last revision processed: if the store compacted it away
                    # meanwhile, the watch says so (Compacted) and everything is re-read.
                    watch = Watch(self.client, self.keys.root,
                                  start_revision=self.revision + 1)
                    watch.wait(0)
                self.revision = self.reconcile()
                if watch is None:
                    watch = Watch(self.client, self.keys.root,
                                  start_revision=self.revision + 1)
                delay = 0.2
                deadline = time.monotonic() + self.tick
                while not self._stop.is_set() and time.monotonic() < deadline:
                    if self._wake.is_set():
                        self._wake.clear()
                        break
                    events = watch.wait(0.25)
                    # Machines' own records change all the time (every agent reports):
                    # they are no reason to re-read, or agents would wake each other.
                    if events and any(not e.key.startswith(self.keys.machines)
                                      for e in events):
                        break
            except Compacted as exc:
                _log.info("agent %s: %s; re-reading", self.machine, exc)
                self.compactions += 1
                if watch is not None:
                    watch.close()
                watch, self.revision = None, 0  # re-read, then watch from the current one
            except (EngineUnreachable, EngineError) as exc:
                self._unreachable(exc)
                if watch is not None:
                    watch.close()
                watch = None
                self._stop.wait(delay)
                delay = min(delay * 2, 5.0)
            except LivemodError as exc:  # a record we cannot use: say so, keep serving
                _log.error("agent %s: %s", self.machine, exc)
                self._set("blocked", error=str(exc))
                self._stop.wait(delay)
                delay = min(delay * 2, 5.0)
        if watch is not None:
            watch.close()

    def _read(self) -> tuple[dict[str, Any] | None, dict[str, Any] | None, int]:
        """The desired and rollout records, read together; and the revision."""
        _, responses, revision = self.client.txn([], [range_op(self.keys.desired),
                                                      range_op(self.keys.rollout)])
        found = []
        for response, what in zip(responses, ("desired record", "rollout record"),
                                  strict=True):
            kvs = response.get("response_range", {}).get("kvs", ())
            found.append(load(kv_from(kvs[0]) if kvs else None, what))
        return found[0], found[1], revision

    def reconcile(self) -> int:
        """One pass: take part in a batch, or catch up; report. The revision read."""
        desired, rollout, revision = self._read()
        if rollout is not None and rollout.get("state") == "running":
            k = int(rollout.get("current", -1))
            batch = load(self.client.get(self.keys.batch(rollout["id"], k)), "batch record")
            if batch is not None and self.machine in batch.get("machines", ()):
                voted = self.client.get(self.keys.vote(rollout["id"], k, self.machine))
                decided = self.client.get(self.keys.decision(rollout["id"], k))
                if voted is None and decided is None:
                    take_part(self, rollout["id"], k, batch)
                    self.report()  # the coordinator waits for this to start the next batch
                    return self._read()[2]
        self._end_orphans()
        wanted = applies_to(self.machine, desired, rollout)
        current = read_desired(self.local.desired_path, self.service).generation
        by_hand = [p for p, w in self._local_state()["workers"].items() if w.get("by_hand")]
        if by_hand:
            # Changed through a worker's socket (an emergency): reported, never reverted
            # here; the rollouts leave this machine out until it is back in step.
            self._set("drifted", engine="reachable", error="")
            self.report()
            return revision
        if wanted != current:
            self.catch_up(wanted)
        self._set("idle", engine="reachable", error="")
        self.report()
        return revision

    def _end_orphans(self) -> None:
        """Abort local transactions no batch of this agent is running: a previous agent
        prepared them and died (kill -9 mid-prepare). The workers read the abort from
        their decision records at once instead of holding their lock until the hold."""
        try:
            statuses, _, _ = self.local.ask_all("service", timeout=5.0)
        except LivemodError:
            return  # no worker: nothing to end
        orphans = {s.get("txn") for s in statuses.values()} - {None}
        for txn in orphans:
            _log.warning("agent %s: aborting local transaction %s, left by an agent that "
                         "is gone", self.machine, txn)
            self.abort_locally(str(txn), "the agent that prepared it is gone")
        end = time.monotonic() + 10.0
        while orphans and time.monotonic() < end and not self._stop.is_set():
            self._stop.wait(0.1)  # the workers read the abort within their poll (0.25 s)
            statuses, _, _ = self.local.ask_all("service", timeout=5.0)
            orphans = {s.get("txn") for s in statuses.values()} - {None}

    def catch_up(self, generation: int) -> None:
        """Bring the machine to ``generation`` (its files from the engine; the workers
        follow the machine's desired set)."""
        record = load(self.client.get(self.keys.history(generation)), "history record")
        if record is None:
            raise LivemodError(f"generation {generation} of service {self.service} has no "
                               f"history record in etcd ({self.keys.history(generation)}); "
                               f"the machine keeps its set")
        self._set("catching-up")
        specs = []
        for spec in specs_from(record, self.keys.history(generation)):
            path = fetch_file(self.client, self.keys, spec.sha256, self.cache)
            specs.append(ModuleSpec(spec.name, spec.version, path, spec.sha256,
                                    spec.params))
        write_desired(desired_path(self.service),
                      DesiredSet(self.service, generation, tuple(specs), f"etcd-{generation}"))
        _log.info("agent %s: caught up to generation %d", self.machine, generation)

    def local_operation(self, change: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        path = None
        if change.get("sha256"):
            path = fetch_file(self.client, self.keys, change["sha256"], self.cache)
        return local_operation(change, path)

    def abort_locally(self, txn: str, reason: str) -> Decision:
        return write_decision(self.local.decisions, Decision(txn, "abort",
                                                             f"agent {self.machine}", reason))
