"""One coordinator per service: a key bound to the coordinator's lease, created once.

The lock is ``<prefix>/<service>/lock``, created only if absent (``create_revision == 0``)
and bound to a lease the coordinator keeps alive from a thread. A coordinator that dies
stops renewing; its lease expires after ``ttl`` seconds and the key goes with it, so the
next ``rollout resume`` can take over. If the engine was away longer than the lease, the
lease is gone when it comes back: the lock is taken again if nobody else took it meanwhile,
and otherwise the coordinator knows it lost it (:meth:`Lock.check`) and stops.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time

from ..errors import LivemodError, RolloutError
from ._client import EtcdClient
from ._records import dump, load

__all__ = ["Lock"]


class Lock:
    """The lock at ``key`` held for ``what`` (a line for whoever finds it held).
    ``_lock`` protects: ``lease``, ``lost``."""

    def __init__(self, client: EtcdClient, key: str, *, ttl: int = 10, what: str = "") -> None:
        self.client, self.key, self.ttl = client, key, ttl
        self.record = {"by": what, "pid": os.getpid(), "host": socket.gethostname(),
                       "since": time.time()}
        self.lease = 0
        self.lost = ""
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _take(self) -> tuple[bool, str]:
        lease = self.client.grant(self.ttl)
        wrote, held = self.client.create(self.key, dump(self.record), lease=lease)
        if wrote:
            with self._lock:
                self.lease = lease
            return True, ""
        self.client.revoke(lease)
        found = load(held, "lock") or {}
        since = time.strftime("%H:%M:%S", time.localtime(float(found.get("since", 0))))
        return False, (f"{found.get('by', 'a coordinator')} (pid {found.get('pid')} on "
                       f"{found.get('host')}, since {since})")

    def acquire(self) -> None:
        """Take the lock and keep it.

        Raises:
            RolloutError: another coordinator holds it.
        """
        ok, holder = self._take()
        if not ok:
            raise RolloutError(f"another rollout holds the service's lock: {holder}; nothing "
                               f"was changed (wait for it to end, or see rollout status; a "
                               f"dead coordinator's lock goes within {self.ttl}s)")
        self._thread = threading.Thread(target=self._keep, name="livemod-rollout-lock",
                                        daemon=True)
        self._thread.start()

    def _keep(self) -> None:
        while not self._stop.wait(max(0.2, self.ttl / 3)):
            try:
                with self._lock:
                    lease = self.lease
                if self.client.keepalive(lease) > 0:
                    continue
                ok, holder = self._take()  # our lease expired while the engine was away
                if not ok:
                    with self._lock:
                        self.lost = f"the lock was taken by {holder}"
                    return
            except LivemodError:
                continue  # the engine is away: keep trying; check() says nothing yet

    def check(self) -> None:
        """Raises RolloutError if the lock was lost to another coordinator."""
        with self._lock:
            lost = self.lost
        if lost:
            raise RolloutError(f"this rollout stopped: {lost} (the engine was unreachable "
                               f"for longer than the lock's {self.ttl}s lease)")

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        with self._lock:
            lease, self.lease = self.lease, 0
        if lease:
            with contextlib.suppress(LivemodError):  # else it expires by itself
                self.client.revoke(lease)

    def __enter__(self) -> Lock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
