"""One client connection of the control server: its input decoder, its capped output buffer,
and the count of its requests in flight.

Two kinds of thread use it. The server's selector thread owns the socket and the plain
fields (``mask``, ``eof``, ``close_when_flushed``, ``last_seen``, ``partial_since``); worker
threads only queue output, finish requests and register cleanups, through the methods
below, which take ``lock``.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable

from .auth import Peer
from .protocol import Decoder

__all__ = ["Connection"]


class Connection:
    """A client. ``lock`` protects: 1) ``_out``; 2) ``closed`` and ``dropping``;
    3) ``_active`` and ``_streams``; 4) ``_closers``."""

    def __init__(self, sock: socket.socket, peer: Peer, *, max_message: int,
                 max_output: int) -> None:
        self.sock = sock
        self.peer = peer
        self.decoder = Decoder(max_message=max_message, kind="request")
        self.max_output = max_output
        self.lock = threading.Lock()
        self._out = bytearray()
        self.closed = False
        self.dropping = False  # the output cap was exceeded: close without flushing
        self._active = 0  # requests queued or running
        self._streams = 0  # requests streaming until the client leaves
        self._closers: list[Callable[[], None]] = []
        # Selector thread only:
        self.mask = 0
        self.eof = False
        self.close_when_flushed = False
        self.last_seen = time.monotonic()
        self.partial_since: float | None = None

    def queue(self, data: bytes) -> bool:
        """Append ``data`` to the output; False if the client is gone or must be dropped.

        One message always fits in an empty buffer (a big ``lsmod`` reply is fine); past
        that, a client whose unread output would exceed ``max_output`` is marked dropping.
        """
        with self.lock:
            if self.closed or self.dropping:
                return False
            if self._out and len(self._out) + len(data) > self.max_output:
                self.dropping = True
                return False
            self._out += data
            return True

    def peek(self, limit: int) -> bytes:
        """Up to ``limit`` bytes of output to send next (a copy: workers may append)."""
        with self.lock:
            return bytes(self._out[:limit])

    def sent(self, count: int) -> tuple[int, int]:
        """Drop ``count`` sent bytes; returns (output left, requests in flight)."""
        with self.lock:
            del self._out[:count]
            return len(self._out), self._active

    def begin(self, limit: int) -> bool:
        """Count a new request in flight, unless ``limit`` are already."""
        with self.lock:
            if self._active >= limit:
                return False
            self._active += 1
            return True

    def end(self, *, streaming: bool = False) -> None:
        """A request finished; a streaming one stays open until the client leaves."""
        with self.lock:
            self._active -= 1
            self._streams += streaming

    def state(self) -> tuple[int, int, int]:
        """(requests in flight, streams open, bytes of output waiting)."""
        with self.lock:
            return self._active, self._streams, len(self._out)

    def on_close(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` when the connection closes (at once if it already has)."""
        with self.lock:
            if not self.closed:
                self._closers.append(fn)
                return
        fn()

    def mark_closed(self) -> list[Callable[[], None]] | None:
        """Mark closed; returns the cleanups to run, or None if it was closed already."""
        with self.lock:
            if self.closed:
                return None
            self.closed = True
            self._out.clear()
            closers, self._closers = self._closers, []
            return closers
