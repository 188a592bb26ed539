"""A host as one worker of a service: its socket, its generation, its transactions.

``Host(service="web")`` calls :func:`attach`, which serves the host's control socket at
``<socket dir>/web/<pid>.sock`` and gives it a :class:`Member`. ``start(host)`` (called by
the integrations once the worker's start-up modules are loaded) reconciles the host to the
desired set and then follows it: a thread watches ``desired.json`` and reconciles whenever
a newer generation appears that this worker did not take part in.

A transaction runs in a thread of its own (:class:`Participant`), because the operation
lock it holds from prepare to the decision is owned by a thread, while prepare, commit and
abort arrive as separate requests on the server's worker threads. A prepared participant
that hears nothing polls the decision record; past its ``hold`` it records an abort itself
(written once: if the coordinator's commit got there first, it commits instead).
"""

from __future__ import annotations

import contextvars
import logging
import os
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..control.errors import NotSupported
from ..errors import LivemodError, ModuleBusy, TransactionAborted
from ._desired import (
    Decision,
    DesiredSet,
    ModuleSpec,
    read_decision,
    read_desired,
    write_decision,
    write_desired,
)
from ._paths import decisions_dir, desired_path, service_dir, socket_path
from ._reconcile import reconcile
from ._staging import Staged, current_specs, stage

if TYPE_CHECKING:
    from .. import Host

__all__ = ["Member", "Participant", "attach", "member_of", "start"]

_log = logging.getLogger("livemod.service")
_POLL = 0.25  # seconds between looks at the decision record / the desired set
# Set by the integrations while they build a worker's host and load its start-up modules:
# the socket is up from Host(service=...) on, but a coordinator must not count the worker in
# (it would find modules missing that are about to load) until start() has reconciled it.
# A context variable, not a Host argument: only the code that will call start() knows.
starting_up: contextvars.ContextVar[bool] = contextvars.ContextVar("livemod_starting_up",
                                                                   default=False)


class Member:
    """The service side of one worker. ``lock`` protects: 1) ``generation``, ``drift``;
    2) ``txn``; 3) ``following``."""

    def __init__(self, host: Host, service: str) -> None:
        self.host = host
        self.service = service
        self.desired_path = desired_path(service)
        self.decisions = decisions_dir(service)
        self.lock = threading.Lock()
        self.generation = 0
        self.drift: str | None = None
        self.txn: Participant | None = None
        # Recently ended transactions: a commit may arrive after the participant already
        # read the recorded decision and carried it out by itself.
        self.ended: dict[str, Participant] = {}
        self.following = False
        self.starting = starting_up.get()  # until start(): see starting_up
        self._applying = 0  # >0 while a transaction or a reconcile changes the host
        self._seen: tuple[int, int, int] | None = None
        host.on_event(self._on_event)

    # ----------------------------------------------------------------- status

    def status(self) -> dict[str, Any]:
        """What ``livemod --service NAME status`` shows for this worker."""
        try:
            desired: int | str = read_desired(self.desired_path, self.service).generation
        except LivemodError as exc:
            desired = f"unreadable: {exc}"
        with self.lock:
            txn = self.txn.txn if self.txn is not None else None
            drift = self.drift
            if drift is None and isinstance(desired, int) and desired != self.generation:
                drift = (f"at generation {self.generation}, the desired set is at {desired}"
                         + ("" if self.following else " (not following it: start() was "
                            "not called)"))
            return {"service": self.service, "pid": os.getpid(),
                    "generation": self.generation, "desired_generation": desired,
                    "drifted": drift is not None, "drift": drift, "txn": txn,
                    "following": self.following, "starting": self.starting,
                    # changed through its own socket (see _on_event): an etcd agent leaves
                    # such a worker's machine alone until it is back in step
                    "by_hand": drift is not None and drift.startswith("changed outside")}

    def _on_event(self, event: Any) -> None:
        if (self._applying or not self.following
                or event.kind not in ("load", "unload", "upgrade", "param")):
            return
        with self.lock:
            self.drift = (f"changed outside the service since generation {self.generation}: "
                          f"{event.kind} {event.module} (use livemod --service "
                          f"{self.service} ..., or restart this worker)")

    # -------------------------------------------------------------- reconcile

    def reconcile_now(self) -> None:
        """Read the desired set and apply it (under the operation lock)."""
        try:
            desired = read_desired(self.desired_path, self.service)
        except LivemodError as exc:
            with self.lock:
                self.drift = f"keeps its current set: {exc}"
            _log.error("service %s: %s", self.service, exc)
            return
        with self.host._life.op_lock:
            with self.lock:
                if desired.generation <= self.generation and self.drift is None:
                    return
            self._applying += 1
            try:
                problems = reconcile(self.host, desired)
            finally:
                self._applying -= 1
            with self.lock:
                if problems:
                    self.drift = (f"behind generation {desired.generation}: "
                                  + "; ".join(problems))
                    _log.error("service %s: %s", self.service, self.drift)
                else:
                    self.generation, self.drift = desired.generation, None

    def follow(self) -> None:
        """Reconcile now, then whenever ``desired.json`` changes (a daemon thread)."""
        with self.lock:
            if self.following:
                return
            self.following = True
        self._seen = self._stamp()
        self.reconcile_now()
        threading.Thread(target=self._follow, name=f"livemod-follow-{self.service}",
                         daemon=True).start()

    def _stamp(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.desired_path)
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _follow(self) -> None:
        host = self.host
        while not host.closed and not host._table.owner.forked:
            time.sleep(_POLL)
            stamp = self._stamp()
            if stamp == self._seen:
                continue
            with self.lock:
                busy = self.txn is not None
            if busy:
                continue  # look again once the transaction is over: never skip a change
            self._seen = stamp
            self.reconcile_now()

    # ------------------------------------------------------------ transactions

    def begin(self, txn: str, op: str, args: Mapping[str, Any], *, generation: int,
              expect: int, hold: float) -> Participant:
        with self.lock:
            if self.txn is not None:
                raise ModuleBusy(f"worker pid {os.getpid()} is already in transaction "
                                 f"{self.txn.txn}; retry when it has ended",
                                 holders=(f"transaction {self.txn.txn}",))
            part = self.txn = Participant(self, txn, op, args, generation=generation,
                                          expect=expect, hold=hold)
        part.start()
        return part

    def find(self, txn: str) -> Participant | None:
        """The participant of ``txn``, running or recently ended."""
        with self.lock:
            if self.txn is not None and self.txn.txn == txn:
                return self.txn
            return self.ended.get(txn)


class Participant:
    """One worker's side of one transaction, in a thread that holds the operation lock
    from prepare until the decision has been carried out."""

    def __init__(self, member: Member, txn: str, op: str, args: Mapping[str, Any], *,
                 generation: int, expect: int, hold: float) -> None:
        self.member, self.txn, self.op, self.args = member, txn, op, dict(args)
        self.generation, self.expect, self.hold = generation, expect, hold
        self.voted = threading.Event()
        self.done = threading.Event()
        self._told = threading.Event()
        self._outcome: str | None = None
        self.error: BaseException | None = None
        self.after: list[ModuleSpec] = []
        self.result: Any = None
        self.outcome: str | None = None

    def start(self) -> None:
        threading.Thread(target=self._run, name=f"livemod-txn-{self.txn}", daemon=True).start()

    def tell(self, outcome: str) -> None:
        """The coordinator's decision arrived."""
        self._outcome = outcome
        self._told.set()

    def _run(self) -> None:
        member, host = self.member, self.member.host
        staged: Staged | None = None
        member._applying += 1  # what prepare changes (a param) is not drift
        try:
            with host._life.op_lock:
                try:
                    if member.generation != self.expect:
                        raise TransactionAborted(
                            f"worker pid {os.getpid()} is at generation {member.generation}, "
                            f"the change was made for generation {self.expect}")
                    staged = stage(host, self.op, self.args)
                    self.after = staged.after(current_specs(host))
                except BaseException as exc:
                    self.error = exc
                    self.outcome = "abort"
                    return
                finally:
                    self.voted.set()
                self.outcome = self._await_decision()
                if self.outcome == "commit":
                    self.result = staged.commit()
                    with member.lock:
                        member.generation, member.drift = self.generation, None
                else:
                    staged.abort()
        except BaseException as exc:  # commit cannot fail; if it did, say so loudly
            _log.exception("service %s: transaction %s failed in this worker",
                           member.service, self.txn)
            with member.lock:
                member.drift = f"transaction {self.txn} failed here: {exc}"
            self.error = exc
        finally:
            member._applying -= 1
            with member.lock:
                if member.txn is self:
                    member.txn = None
                member.ended[self.txn] = self
                while len(member.ended) > 8:
                    del member.ended[next(iter(member.ended))]
            self.done.set()

    def _await_decision(self) -> str:
        member = self.member
        deadline = time.monotonic() + self.hold
        while True:
            if self._told.wait(_POLL):
                assert self._outcome is not None
                return self._outcome
            found = read_decision(member.decisions, self.txn, member.service)
            if found is None and time.monotonic() >= deadline:
                found = write_decision(member.decisions, Decision(
                    self.txn, "abort", f"worker {os.getpid()}",
                    f"no decision within {self.hold:g}s of prepare"))
            if found is not None:
                if found.outcome == "commit" and found.desired is not None:
                    self._catch_up_desired(found.desired)
                return found.outcome

    def _catch_up_desired(self, desired: DesiredSet) -> None:
        """The coordinator recorded commit but may have died before writing the set."""
        member = self.member
        try:
            if read_desired(member.desired_path, member.service).generation < desired.generation:
                write_desired(member.desired_path, desired)
        except LivemodError:
            write_desired(member.desired_path, desired)


def attach(host: Host, service: str) -> Any:
    """Serve ``host``'s socket as a worker of ``service``, with a :class:`Member`; returns
    the started ControlServer. Called by ``Host(service=...)``."""
    from ..control.server import ControlServer

    service_dir(service, create=True)
    return ControlServer(host, socket_path(service), service=Member(host, service)).start()


def member_of(host: Any) -> Member:
    """The host's :class:`Member`.

    Raises:
        NotSupported: the host is not a worker of a service.
    """
    member = getattr(getattr(host, "control", None), "service", None)
    if not isinstance(member, Member):
        raise NotSupported("this host is not a worker of a service (build it with "
                           "livemod.Host(service=NAME))")
    return member


def start(host: Host) -> Member:
    """Reconcile a worker to its service's desired set and follow it from now on.

    Call it once the worker's start-up modules are loaded (the integrations do).
    """
    member = member_of(host)
    try:
        member.follow()
    finally:
        member.starting = False
    return member
