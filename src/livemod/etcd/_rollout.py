"""``livemod rollout``: the coordinator of a change across a service's machines.

A rollout is a desired change written once, then moved through the machines in batches:

1. Take the service's lock (``_lock``): one coordinator at a time.
2. Read the desired and rollout records; work out the generation the change is made from
   (before the first rollout: the set every machine reports, which must agree) and,
   statically, the set it makes. Put the new module file into the engine by hash.
3. Write the new desired record, its history entry and the rollout record in **one**
   transaction that compares both records' ``mod_revision``: if another operator wrote
   first, nothing is written and this one is told.
4. Batches (``_batches``): the canary first, then ``--batch`` machines at a time, each all
   or nothing, its decision written once. A batch that aborts counts as failed: the canary
   failing, or more than ``--max-failed`` batches failing, stops the rollout (``aborted``
   if no batch had committed -- every machine keeps the old generation -- else ``halted``,
   for ``resume`` or ``undo``).

``undo`` is a new generation with the content of the one before, rolled out the same way
(``_plan.inverse``); ``resume`` continues a running or halted rollout from its current
batch, after its coordinator died or stopped.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from typing import Any

from ..errors import RolloutError
from ..service import ModuleSpec
from ._apply import single_change
from ._batches import run
from ._client import EtcdClient, compare_modified, kv_from, put_op, range_op
from ._files import put_file
from ._lock import Lock
from ._options import Options
from ._plan import describe, inverse, make_change, target_of
from ._records import Keys, dump, load, specs_from, specs_json

__all__ = ["Options", "Rollout"]


class Rollout:
    """Roll changes out to the machines of ``service`` (see the module essay).

    Args:
        client: the etcd client.
        service: the service name.
        prefix: the key prefix (the agents' ``--prefix``).
        ttl: seconds of the lock's lease.
        say: called with one line per step (the CLI prints them).
    """

    def __init__(self, client: EtcdClient, service: str, *, prefix: str = "/livemod",
                 ttl: int = 10, say: Callable[[str], None] | None = None) -> None:
        self.client, self.service = client, service
        self.keys = Keys(prefix, service)
        self.ttl = ttl
        self._say = say
        self.lock: Lock | None = None

    def say(self, line: str) -> None:
        if self._say is not None:
            self._say(line)

    # ------------------------------------------------------------------ reads

    def read(self) -> tuple[Any, Any]:
        """(desired KV or None, rollout KV or None), read together."""
        _, responses, _ = self.client.txn([], [range_op(self.keys.desired),
                                               range_op(self.keys.rollout)])
        found = []
        for response in responses:
            kvs = response.get("response_range", {}).get("kvs", ())
            found.append(kv_from(kvs[0]) if kvs else None)
        return found[0], found[1]

    def machines(self) -> dict[str, dict[str, Any]]:
        """The registered (alive) machines' records, by id."""
        kvs, _ = self.client.range(self.keys.machines, prefix=True)
        found = {}
        for kv in kvs:
            record = load(kv, "machine record")
            if record is not None:
                found[kv.key[len(self.keys.machines):]] = record
        return found

    def status(self) -> dict[str, Any]:
        """The desired record, the rollout record and the machines."""
        desired_kv, rollout_kv = self.read()
        return {"service": self.service, "prefix": self.keys.prefix,
                "desired": load(desired_kv, "desired record"),
                "rollout": load(rollout_kv, "rollout record"), "machines": self.machines()}

    def history_record(self, generation: int) -> dict[str, Any]:
        record = load(self.client.get(self.keys.history(generation)), "history record")
        if record is None:
            raise RolloutError(f"generation {generation} of service {self.service} has no "
                               f"history record ({self.keys.history(generation)})")
        return record

    def history(self, generation: int) -> tuple[ModuleSpec, ...]:
        return specs_from(self.history_record(generation), self.keys.history(generation))

    # ----------------------------------------------------------------- starts

    def _locked(self, what: str) -> Lock:
        lock = Lock(self.client, self.keys.lock, ttl=self.ttl, what=what)
        lock.acquire()
        self.lock = lock
        return lock

    def _base(self, desired: dict[str, Any] | None, rollout: dict[str, Any] | None,
              machines: dict[str, dict[str, Any]]
              ) -> tuple[int, tuple[ModuleSpec, ...], bool]:
        """The generation a new change is made from, its set, and whether that set comes
        from the machines (no rollout yet: its history entry is written now)."""
        if desired is not None:
            if rollout is not None and rollout.get("state") == "aborted" and \
                    rollout.get("generation") == desired.get("generation"):
                base = int(rollout["base"])
                return base, self.history(base), False
            return (int(desired["generation"]),
                    specs_from(desired, self.keys.desired), False)
        sets: dict[tuple[tuple[str, str, str], ...], list[str]] = {}
        specs: dict[tuple[tuple[str, str, str], ...], tuple[ModuleSpec, ...]] = {}
        for machine, record in sorted(machines.items()):
            found = tuple(ModuleSpec(m["name"], m["version"], m["path"].rsplit("/", 1)[-1],
                                     m["sha256"], m.get("params") or {})
                          for m in record.get("modules", ()))
            key = tuple((s.name, s.version, s.sha256) for s in found)
            sets.setdefault(key, []).append(machine)
            specs[key] = found
        if len(sets) > 1:
            lines = [f"{', '.join(ms)}: " + (", ".join(f"{n} {v}" for n, v, _ in key) or
                                           "no modules") for key, ms in sets.items()]
            raise RolloutError("the machines run different module sets, so there is no "
                               "generation to start from; nothing was changed (bring them "
                               "to one set first): " + "; ".join(lines),
                               votes=tuple(lines))
        return 0, next(iter(specs.values())), True

    def start(self, op: str, options: Options, *, name: str | None = None,
              path: str | None = None, params: dict[str, Any] | None = None,
              key: str | None = None, value: Any = None, downgrade: bool = False
              ) -> dict[str, Any]:
        """Write the change and roll it out; returns the final rollout record.

        Raises:
            RolloutError: refused (nothing changed) or stopped (the record says where).
            EngineUnreachable: etcd did not answer.
        """
        options.check()
        lock = self._locked(f"rollout {op} {name or path}")
        try:
            desired_kv, rollout_kv = self.read()
            desired = load(desired_kv, "desired record")
            rollout = load(rollout_kv, "rollout record")
            if rollout is not None and rollout.get("state") in ("running", "halted"):
                raise RolloutError(
                    f"rollout {rollout.get('id')} of service {self.service} is "
                    f"{rollout['state']} ({describe(rollout.get('change', {}))}); nothing was "
                    f"changed: finish it with rollout resume, or rollout undo")
            machines = self.machines()
            if not machines:
                raise RolloutError(
                    f"no machine of service {self.service!r} is registered in etcd at "
                    f"{self.client.url} under {self.keys.machines}; nothing was changed: "
                    f"are the agents running, with the same --service and --prefix?")
            base, base_specs, from_machines = self._base(desired, rollout, machines)
            if op == "apply":
                assert path is not None
                found = single_change(path, base_specs, base)
                op, name, path = found.pop("op"), found.pop("name", None), found.pop("path", None)
                params, key, value = (found.get("params"), found.get("key"),
                                      found.get("value"))
            sha = put_file(self.client, self.keys, path) if path else ""
            change = make_change(op, name=name, path=path, sha256=sha, params=params,
                                 key=key, value=value)
            change["downgrade"] = downgrade
            target = target_of(change, base_specs, base)
            generation = max(int((desired or {}).get("generation", 0)), base) + 1
            return self._write_and_run(desired_kv, rollout_kv, change, base, base_specs,
                                       target, generation, options,
                                       history_base=from_machines)
        finally:
            lock.release()

    def _write_and_run(self, desired_kv: Any, rollout_kv: Any, change: dict[str, Any],
                       base: int, base_specs: tuple[ModuleSpec, ...],
                       target: tuple[ModuleSpec, ...], generation: int, options: Options,
                       *, history_base: bool, committed: list[str] | None = None,
                       undo_of: str | None = None) -> dict[str, Any]:
        rid = f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
        record = {"service": self.service, "generation": generation, "base": base,
                  "modules": specs_json(target), "change": change, "rollout": rid,
                  "undo_of": undo_of, "written": time.time()}
        rollout = {"id": rid, "generation": generation, "base": base, "change": change,
                   "state": "running", "options": options.to_json(), "batches": [],
                   "committed": list(committed or []), "failed": [], "current": -1,
                   "started": time.time(), "undo_of": undo_of}
        ops = [put_op(self.keys.desired, dump(record)),
               put_op(self.keys.history(generation), dump(record)),
               put_op(self.keys.rollout, dump(rollout))]
        if history_base:
            ops.append(put_op(self.keys.history(base), dump(
                {"service": self.service, "generation": base,
                 "modules": specs_json(base_specs), "change": None})))
        compare = [compare_modified(self.keys.desired, desired_kv.mod_revision
                                    if desired_kv else 0),
                   compare_modified(self.keys.rollout, rollout_kv.mod_revision
                                    if rollout_kv else 0)]
        ok, _, _ = self.client.txn(compare, ops)
        if not ok:
            now = load(self.client.get(self.keys.desired), "desired record") or {}
            raise RolloutError(
                f"another operator changed service {self.service} first (generation "
                f"{now.get('generation')}: {describe(now.get('change') or {})}); nothing was "
                f"changed: see rollout status, then try again")
        self.say(f"generation {generation}: {describe(change)} (from generation {base}), "
                 f"rollout {rid}")
        return run(self, rollout, options)

    def resume(self) -> dict[str, Any]:
        """Continue the running or halted rollout from its current batch."""
        lock = self._locked("rollout resume")
        try:
            _, rollout_kv = self.read()
            rollout = load(rollout_kv, "rollout record")
            if rollout is None or rollout.get("state") not in ("running", "halted"):
                state = "none" if rollout is None else rollout.get("state")
                raise RolloutError(f"no rollout of service {self.service} to resume (the "
                                   f"last one is {state}); nothing was changed")
            rollout["state"], rollout["failed"] = "running", []
            self.client.put(self.keys.rollout, dump(rollout))
            options = Options(**rollout.get("options", {}))
            self.say(f"resuming rollout {rollout['id']} at batch "
                     f"{max(0, int(rollout.get('current', -1)))}")
            return run(self, rollout, options)
        finally:
            lock.release()

    def undo(self, options: Options) -> dict[str, Any]:
        """Roll out a new generation with the content of the one before the last change."""
        options.check()
        lock = self._locked("rollout undo")
        try:
            desired_kv, rollout_kv = self.read()
            desired = load(desired_kv, "desired record")
            rollout = load(rollout_kv, "rollout record")
            if desired is None or not desired.get("change"):
                raise RolloutError(f"service {self.service} has no rolled-out change to "
                                   f"undo; nothing was changed")
            state = (rollout or {}).get("state")
            if state == "running":
                raise RolloutError("a rollout is running; stop it first (or let it finish), "
                                   "then undo")
            if state == "aborted":
                raise RolloutError(f"the last rollout ({rollout and rollout.get('id')}) "
                                   f"aborted: every machine kept generation "
                                   f"{rollout and rollout.get('base')}; nothing to undo")
            current, base = int(desired["generation"]), int(desired["base"])
            back = self.history(base)
            change = inverse(desired["change"], back, base)
            already: list[str] = []
            if state == "halted" and rollout is not None:
                # Machines the halted rollout never reached already run the old content.
                already = [m for m in self.machines() if m not in rollout.get("committed", ())]
            return self._write_and_run(desired_kv, rollout_kv, change, current,
                                       specs_from(desired, self.keys.desired), back,
                                       current + 1, options, history_base=False,
                                       committed=already, undo_of=desired.get("rollout"))
        finally:
            lock.release()
