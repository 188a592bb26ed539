"""etcd's streaming watch over the JSON gateway, as a doorbell.

``POST /v3/watch`` with a ``create_request`` answers with a chunked stream of JSON
objects, one per line: ``{"result": {"created": true}}`` first, then one result per
revision with its ``events``. A reader thread reads the stream and hands each result to a
queue, so the consumer waits with a timeout (a socket timeout in the middle of a chunked
body would leave ``http.client`` in an undefined state; a queue's timeout leaves nothing
broken). Closing the watch shuts the socket down, which ends the reader's blocking read.

Nothing here decides anything from an event: the agent and the coordinator re-read the
records after every wake-up (level-triggered), so an event missed, merged or duplicated
never matters. What matters is the revision to start from: a watch from a revision the
store has compacted away is cancelled with ``compact_revision``; :meth:`Watch.wait`
raises :class:`Compacted` then, and the caller re-reads everything and watches on from
the store's current revision.
"""

from __future__ import annotations

import contextlib
import json
import queue
import socket
import threading
from typing import Any

from ..errors import EngineUnreachable
from ._client import EtcdClient, b64, prefix_end, unb64

__all__ = ["Compacted", "Event", "Watch"]


class Compacted(Exception):
    """The watch started before the store's compaction point; re-read and watch from
    ``revision`` (the compaction point) on."""

    def __init__(self, revision: int) -> None:
        super().__init__(f"watch revision compacted (etcd keeps revisions from {revision})")
        self.revision = revision


class Event:
    """One change: ``kind`` is "PUT" or "DELETE"."""

    __slots__ = ("key", "kind", "mod_revision", "value")

    def __init__(self, raw: dict[str, Any]) -> None:
        kv = raw.get("kv", {})
        self.kind = str(raw.get("type", "PUT"))
        self.key = unb64(kv.get("key", "")).decode(errors="surrogateescape")
        self.value = unb64(kv.get("value", ""))
        self.mod_revision = int(kv.get("mod_revision", 0))


_END = object()


class Watch:
    """Watch ``key`` (every key under it, with ``prefix``) from ``start_revision`` on.

    Raises (from the constructor):
        EngineUnreachable: etcd did not answer.
    """

    def __init__(self, client: EtcdClient, key: str, *, prefix: bool = True,
                 start_revision: int = 0) -> None:
        self.client = client
        #: The revision to start the next watch from, once this one has seen events.
        self.next_revision = start_revision
        self._queue: queue.Queue[Any] = queue.Queue()
        self._closed = False
        request: dict[str, Any] = {"key": b64(key)}
        if prefix:
            request["range_end"] = b64(prefix_end(key))
        if start_revision:
            request["start_revision"] = str(start_revision)
        self._conn = client.connection(client.timeout)
        try:
            self._conn.request("POST", "/v3/watch",
                               json.dumps({"create_request": request}).encode(),
                               client.headers())
            self._response = self._conn.getresponse()
            first = self._response.readline()
            if self._response.status != 200:
                raise client.unreachable(OSError(f"HTTP {self._response.status}: "
                                                 f"{first[:200]!r}"))
            if self._conn.sock is not None:
                self._conn.sock.settimeout(None)  # the reader blocks; close() ends it
        except OSError as exc:
            self._conn.close()
            raise client.unreachable(exc) from None
        except EngineUnreachable:
            self._conn.close()
            raise
        self._take(first)
        threading.Thread(target=self._read, name="livemod-etcd-watch", daemon=True).start()

    def _take(self, line: bytes) -> None:
        try:
            message = json.loads(line)
        except ValueError:
            return
        result = message.get("result", {}) if isinstance(message, dict) else {}
        if isinstance(result, dict):
            self._queue.put(result)

    def _read(self) -> None:
        try:
            while True:
                line = self._response.readline()
                if not line:
                    break
                self._take(line)
        except (OSError, ValueError, AttributeError):
            pass  # closed under us, or the server went away
        finally:
            self._queue.put(_END)

    def wait(self, timeout: float) -> list[Event] | None:
        """The events that arrived within ``timeout`` seconds (``[]`` for a progress
        notice), or None if nothing did.

        Raises:
            Compacted: the start revision is compacted: re-read, watch on from its revision.
            EngineUnreachable: the stream ended (etcd stopped, or the watch was closed).
        """
        try:
            result = self._queue.get(timeout=timeout)
        except queue.Empty:
            return None
        if result is _END:
            self._queue.put(_END)
            raise EngineUnreachable(f"the watch on etcd at {self.client.url} ended",
                                    url=self.client.url)
        if result.get("compact_revision"):
            raise Compacted(int(result["compact_revision"]))
        if result.get("canceled"):
            raise EngineUnreachable(f"etcd at {self.client.url} cancelled the watch: "
                                    f"{result.get('cancel_reason', 'no reason given')}",
                                    url=self.client.url)
        events = [Event(e) for e in result.get("events", ())]
        for event in events:
            self.next_revision = max(self.next_revision, event.mod_revision + 1)
        revision = int(result.get("header", {}).get("revision", 0))
        if not events and revision and not result.get("created"):
            self.next_revision = max(self.next_revision, revision + 1)
        return events

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        sock = self._conn.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._conn.close()

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
