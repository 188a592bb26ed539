"""The control client: send a request to a host's socket, read its events and reply.

A reply's error becomes the LivemodError subclass of its ``code`` (with its message and
fields such as ``ModuleBusy.holders``), so code using the client handles errors exactly as
code using a ``Host`` in-process does.
"""

from __future__ import annotations

import errno
import itertools
import os
import socket
from collections.abc import Iterator
from types import TracebackType
from typing import Any, Literal

from ..errors import ProtocolError
from .errors import HostUnreachable, PermissionDenied
from .paths import ENV_VAR, not_a_socket
from .protocol import MAX_REPLY, Decoder, encode, error_from_wire, request

__all__ = ["ControlClient", "StreamItem"]

StreamItem = tuple[Literal["event", "result"], Any]
_HINT = f"is `livemod host` running? set {ENV_VAR} or --socket"


class ControlClient:
    """A connection to one host's control socket, opened on first use and reused.

    Not thread-safe: one request at a time (give each thread its own client).

    Args:
        path: the socket path.
        timeout: seconds to wait for the connection and for each message of a reply (an
            event resets it); ``None`` waits for ever (``log --follow``).
        max_reply: size limit of one reply, in bytes.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, timeout: float | None = 10.0,
        max_reply: int = MAX_REPLY,
    ) -> None:
        self.path = os.fspath(path)
        self.timeout = timeout
        self._max_reply = max_reply
        self._ids = itertools.count(1)
        self._sock: socket.socket | None = None
        self._decoder = Decoder(max_message=max_reply, kind="reply")

    def call(self, op: str, **args: Any) -> Any:
        """Perform ``op`` and return its result (events, such as progress, are skipped).

        Raises:
            LivemodError: the subclass of the reply's error code.
            HostUnreachable: no host answers.
            PermissionDenied: the host refuses this user.
        """
        for kind, payload in self.stream(op, **args):
            if kind == "result":
                return payload
        raise HostUnreachable(f"{self.path}: the host sent no reply to {op!r}")  # pragma: no cover

    def stream(self, op: str, **args: Any) -> Iterator[StreamItem]:
        """Perform ``op``, yielding ``("event", event)`` for each intermediate message and
        finally ``("result", result)``. A streaming op (``log`` with ``follow=True``) yields
        events until the iterator is closed or the host goes away.

        Closing the iterator early closes the connection (the next request reconnects).
        """
        sock = self._connect()
        rid = next(self._ids)
        finished = False
        try:
            try:
                sock.sendall(encode(request(rid, op, args)))
            except (BrokenPipeError, ConnectionResetError):
                pass  # the host hung up at once (a refusal): its reason is in what we read
            except TimeoutError:
                raise HostUnreachable(f"{self.path}: timed out sending {op!r}") from None
            while True:
                message = self._read(op)
                if message["id"] is None and message.get("ok") is False:
                    raise error_from_wire(message["error"])
                if message["id"] != rid:
                    continue  # a late message of an earlier, abandoned request
                if "event" in message:
                    yield "event", message["event"]
                elif message["ok"]:
                    finished = True
                    yield "result", message.get("result")
                    return
                else:
                    finished = True
                    raise error_from_wire(message["error"])
        finally:
            if not finished:
                self.close()

    def close(self) -> None:
        """Close the connection (a later request opens a new one)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._decoder = Decoder(max_message=self._max_reply, kind="reply")

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ private

    def _connect(self) -> socket.socket:
        if self._sock is not None:
            return self._sock
        why = not_a_socket(self.path)
        if why is not None:
            raise HostUnreachable(why)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.path)
        except FileNotFoundError:
            sock.close()
            raise HostUnreachable(f"no control socket at {self.path}: {_HINT}") from None
        except ConnectionRefusedError:
            sock.close()
            raise HostUnreachable(f"nobody listens on {self.path} (a host that died left it "
                                  f"behind?): {_HINT}") from None
        except PermissionError:
            sock.close()
            raise PermissionDenied(
                f"cannot open {self.path}: permission denied (the socket belongs to another "
                f"user; run as the user the host runs as, or ask for allow_users)"
            ) from None
        except TimeoutError:
            sock.close()
            raise HostUnreachable(f"timed out connecting to {self.path}: {_HINT}") from None
        except OSError as exc:
            sock.close()
            raise HostUnreachable(f"cannot connect to {self.path}: "
                                  f"{exc.strerror or exc}: {_HINT}") from None
        self._sock = sock
        return sock

    def _read(self, op: str) -> dict[str, Any]:
        """The next complete message from the host."""
        assert self._sock is not None
        while True:
            try:
                return next(self._decoder)
            except StopIteration:
                pass
            except ProtocolError as exc:
                raise ProtocolError(f"{self.path}: the host sent a bad message: {exc}") from None
            try:
                data = self._sock.recv(65536)
            except TimeoutError:
                raise HostUnreachable(f"{self.path}: no answer to {op!r} within "
                                      f"{self.timeout:g}s (the host may be stuck)") from None
            except OSError as exc:
                if exc.errno not in (errno.ECONNRESET, errno.EPIPE):
                    raise HostUnreachable(f"{self.path}: {exc.strerror or exc}") from None
                data = b""
            if not data:
                raise HostUnreachable(
                    f"{self.path}: the host closed the connection before answering {op!r} "
                    f"(it may have stopped; whether {op!r} was done is unknown)")
            self._decoder.feed(data)
