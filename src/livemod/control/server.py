"""The control server: a host's Unix socket, for the ``livemod`` command and other tools.

Threads. One selector thread does every socket operation (accept, recv, send, close), all
non-blocking, so no client can stall another by being slow to send or to read. Requests run
in two small worker pools -- one for queries, one for operations that change modules -- so a
slow ``rmmod --wait`` (which holds the host's operation lock) never delays ``lsmod``.
Workers never touch a socket: they append encoded messages to the connection's output
buffer and wake the selector through a socket pair.

Hostile clients. Each connection has a cap on buffered output (a client that does not read
is dropped, not buffered for without end), a limit on requests in flight, a size limit per
message, a deadline for finishing a started message and an idle timeout. A bad line gets an
error reply; an oversized or unfinished message gets one and the connection is closed. The
host never sees any of it: a request reaches it only after every field was checked.

Security. The socket is bound inside a fresh 0700 folder, chmod-ed to 0600 and only then
linked to its public path, so it is never reachable by others even for an instant; peers
are checked with SO_PEERCRED (see :mod:`.listen` and :mod:`.auth`). Only JSON crosses
the socket.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import os
import selectors
import socket
import threading
import time
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any, Final

import livemod

from ..errors import LivemodError, ProtocolError
from .auth import PeerPolicy, peer_credentials
from .connection import Connection
from .errors import TooManyClients
from .listen import bind_private, unlink_if_same
from .ops import OPS, STREAMING, Call, check_args, is_mutation
from .paths import default_socket_path
from .protocol import (
    MAX_MESSAGE,
    RequestId,
    encode,
    error_reply,
    event_message,
    ok_reply,
)

__all__ = ["ControlServer"]

_log = logging.getLogger("livemod.control")
_LISTENER: Final = object()
_WAKE: Final = object()
_RECV: Final = 65536
_SEND: Final = 256 * 1024
_MAX_IN_FLIGHT: Final = 16  # requests of one connection queued or running at once


class ControlServer:
    """Serves a host's control protocol on a Unix socket (see :mod:`.protocol` and
    :mod:`.ops`).

    Args:
        host: the host to control; the server uses only its public API and never closes it.
        path: the socket path; default ``$XDG_RUNTIME_DIR/livemod/<host.name>.sock`` (see
            :func:`~livemod.control.paths.default_socket_dir`).
        allow_users: user names or numeric ids admitted besides the host's own user and root.
        allow_groups: group names or numeric ids whose members are admitted too.
        max_message: size limit of one request, in bytes.
        max_clients: connections served at once; more are told so and closed.
        max_output: bytes buffered for a client that does not read before it is dropped.
        idle_timeout: seconds a connection with nothing in flight may stay silent.
        message_timeout: seconds a client has to finish a message it started.
        workers: threads per pool (one pool for queries, one for changes).
    """

    def __init__(
        self,
        host: livemod.Host,
        path: str | os.PathLike[str] | None = None,
        *,
        allow_users: Iterable[str | int] = (),
        allow_groups: Iterable[str | int] = (),
        max_message: int = MAX_MESSAGE,
        max_clients: int = 64,
        max_output: int = 1 << 20,
        idle_timeout: float = 600.0,
        message_timeout: float = 10.0,
        workers: int = 4,
    ) -> None:
        self.host = host
        self.path = os.path.abspath(os.fspath(path)) if path else default_socket_path(host.name)
        self._default_folder = path is None
        self._policy = PeerPolicy(allow_users, allow_groups)
        self.max_message = max_message
        self.max_clients = max_clients
        self.max_output = max_output
        self.idle_timeout = idle_timeout
        self.message_timeout = message_timeout
        self._workers = workers
        self._tick = max(0.01, min(0.25, message_timeout / 4, idle_timeout / 4))
        self._conns: dict[int, Connection] = {}  # selector thread only
        self._dirty: set[Connection] = set()
        self._dirty_lock = threading.Lock()  # protects: _dirty
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._identity: tuple[int, int] | None = None  # (st_dev, st_ino) of our socket file

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> ControlServer:
        """Bind the socket and start serving. Returns ``self``.

        Raises:
            LivemodError: the path is taken by a live host or by something not a socket,
                its folder is not ours, or it is too long for a Unix socket.
        """
        if self._thread is not None:
            return self
        self._listener, self._identity = bind_private(
            self.path, private_folder=self._default_folder)
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        for s in (self._listener, self._wake_r, self._wake_w):
            s.setblocking(False)
        self._sel.register(self._listener, selectors.EVENT_READ, _LISTENER)
        self._sel.register(self._wake_r, selectors.EVENT_READ, _WAKE)
        self._queries = concurrent.futures.ThreadPoolExecutor(
            self._workers, thread_name_prefix="livemod-control-query")
        self._changes = concurrent.futures.ThreadPoolExecutor(
            max(1, self._workers // 2), thread_name_prefix="livemod-control-change")
        self._thread = threading.Thread(target=self._serve, name="livemod-control", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving: disconnect every client, remove the socket file (if still ours).

        Requests already running in the host finish there; their replies are dropped.
        """
        if self._thread is None or self._stopping.is_set():
            return
        self._stopping.set()
        self._wake()
        self._thread.join(5.0)
        for conn in list(self._conns.values()):
            self._close(conn)
        self._sel.close()
        for s in (self._listener, self._wake_r, self._wake_w):
            s.close()
        unlink_if_same(self.path, self._identity)
        self._queries.shutdown(wait=False, cancel_futures=True)
        self._changes.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> ControlServer:
        return self.start()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ------------------------------------------------------------ selector thread

    def _serve(self) -> None:
        last_sweep = 0.0
        while not self._stopping.is_set():
            try:
                for key, mask in self._sel.select(self._tick):
                    if key.data is _LISTENER:
                        self._accept()
                    elif key.data is _WAKE:
                        with contextlib.suppress(OSError):
                            self._wake_r.recv(4096)
                    else:
                        self._io(key.data, mask)
                self._service_dirty()
                now = time.monotonic()
                if now - last_sweep >= self._tick:
                    last_sweep = now
                    self._sweep(now)
            except Exception:  # a bug here must not take the control plane down for good
                _log.exception("livemod control server: unexpected error; carrying on")

    def _io(self, conn: Connection, mask: int) -> None:
        try:
            if mask & selectors.EVENT_READ and not conn.closed:
                self._read(conn)
            if mask & selectors.EVENT_WRITE and not conn.closed:
                self._flush(conn)
        except Exception:
            _log.exception("livemod control: error serving pid %s; dropping it", conn.peer.pid)
            self._close(conn)

    def _accept(self) -> None:
        for _ in range(64):
            try:
                sock, _addr = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and friends: log, keep serving the others
                _log.warning("livemod control: accept failed: %s", exc)
                return
            sock.setblocking(False)
            try:
                peer = peer_credentials(sock)
            except OSError:
                sock.close()
                continue
            if not self._policy.allows(peer):
                _log.warning("livemod control: refused uid %d (pid %d)", peer.uid, peer.pid)
                self._refuse(sock, self._policy.refusal(peer))
            elif len(self._conns) >= self.max_clients:
                self._refuse(sock, TooManyClients(
                    f"the host serves its maximum of {self.max_clients} clients; retry later"))
            else:
                conn = Connection(sock, peer, max_message=self.max_message,
                                  max_output=self.max_output)
                self._conns[sock.fileno()] = conn
                self._set_mask(conn, selectors.EVENT_READ)

    @staticmethod
    def _refuse(sock: socket.socket, exc: LivemodError) -> None:
        with contextlib.suppress(OSError):
            sock.send(encode(error_reply(None, exc)))
            sock.shutdown(socket.SHUT_WR)
            # Read what the peer already sent: closing with unread input would make the
            # peer's next read fail with ECONNRESET before it sees our reply.
            for _ in range(16):
                if not sock.recv(_RECV):
                    break
        sock.close()

    def _read(self, conn: Connection) -> None:
        try:
            data = conn.sock.recv(_RECV)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(conn)
            return
        now = conn.last_seen = time.monotonic()
        if not data:
            conn.eof = True
            active, streams, waiting = conn.state()
            # Gone (a followed log ends with it), or nothing left to answer.
            if streams or not (active or waiting):
                self._close(conn)
            else:  # half-closed after sending: answer what is in flight, then close
                self._set_mask(conn, conn.mask & ~selectors.EVENT_READ)
                self._mark_dirty(conn)
            return
        conn.decoder.feed(data)
        while not (conn.closed or conn.close_when_flushed):
            try:
                message = next(conn.decoder)
            except StopIteration:
                break
            except ProtocolError as exc:
                self._send(conn, error_reply(exc.request_id, exc))
                if conn.decoder.overflowed:
                    self._finish_with(conn)
                continue
            self._dispatch(conn, message)
        conn.partial_since = (conn.partial_since or now) if conn.decoder.pending else None

    def _dispatch(self, conn: Connection, message: dict[str, Any]) -> None:
        rid, op = message["id"], message["op"]
        try:
            args = check_args(op, message["args"])
        except ProtocolError as exc:
            self._send(conn, error_reply(rid, exc))
            return
        if not conn.begin(_MAX_IN_FLIGHT):
            self._send(conn, error_reply(rid, ProtocolError(
                f"more than {_MAX_IN_FLIGHT} requests in flight on one connection; "
                f"wait for replies before sending more", request_id=rid)))
            return
        pool = self._changes if is_mutation(op, args) else self._queries
        try:
            pool.submit(self._run, conn, rid, op, args)
        except RuntimeError:  # shutting down
            conn.end()

    def _service_dirty(self) -> None:
        with self._dirty_lock:
            dirty, self._dirty = self._dirty, set()
        for conn in dirty:
            if conn.closed:
                continue
            if conn.dropping:
                _log.warning("livemod control: pid %d does not read its replies; dropped",
                             conn.peer.pid)
                self._close(conn)
                continue
            self._flush(conn)

    def _flush(self, conn: Connection) -> None:
        chunk = conn.peek(_SEND)
        sent = 0
        if chunk:
            try:
                sent = conn.sock.send(chunk)
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                self._close(conn)
                return
            if sent:
                conn.last_seen = time.monotonic()
        left, active = conn.sent(sent)
        if not left and (conn.close_when_flushed or (conn.eof and not active)):
            self._close(conn)
            return
        reading = 0 if conn.eof or conn.close_when_flushed else selectors.EVENT_READ
        self._set_mask(conn, reading | (selectors.EVENT_WRITE if left else 0))

    def _sweep(self, now: float) -> None:
        for conn in list(self._conns.values()):
            active, streams, _ = conn.state()
            waiting = active or streams
            if conn.partial_since is not None and now - conn.partial_since > self.message_timeout:
                conn.partial_since = None
                self._send(conn, error_reply(None, ProtocolError(
                    f"incomplete message: no end of line within {self.message_timeout:g}s")))
                self._finish_with(conn)
            else:
                # A closing client gets message_timeout to take its last reply; an idle
                # one (nothing in flight, no stream) idle_timeout to say something.
                limit = self.message_timeout if conn.close_when_flushed else (
                    None if waiting else self.idle_timeout)
                if limit is not None and now - conn.last_seen > limit:
                    self._close(conn)

    def _finish_with(self, conn: Connection) -> None:
        """Read nothing more from ``conn``; close it once what is queued is sent."""
        conn.close_when_flushed = True
        self._set_mask(conn, conn.mask & ~selectors.EVENT_READ)
        self._mark_dirty(conn)

    def _set_mask(self, conn: Connection, mask: int) -> None:
        if mask == conn.mask or conn.closed:
            return
        if not conn.mask:
            self._sel.register(conn.sock, mask, conn)
        elif not mask:
            self._sel.unregister(conn.sock)
        else:
            self._sel.modify(conn.sock, mask, conn)
        conn.mask = mask

    def _close(self, conn: Connection) -> None:
        closers = conn.mark_closed()
        if closers is None:
            return
        self._conns.pop(conn.sock.fileno(), None)
        if conn.mask:
            with contextlib.suppress(KeyError, ValueError, OSError):
                self._sel.unregister(conn.sock)
        conn.sock.close()
        for fn in closers:
            try:
                fn()
            except Exception:
                _log.exception("livemod control: cleanup after a disconnect failed")

    # ------------------------------------------------------------ any thread

    def _send(self, conn: Connection, message: Mapping[str, Any]) -> bool:
        """Queue ``message`` for ``conn``; False if the client is gone or will be dropped."""
        try:
            data = encode(message)
        except ProtocolError as exc:  # a result that is not JSON: a bug, reported as such
            data = encode(error_reply(message.get("id"), exc))
        queued = conn.queue(data)
        if queued or conn.dropping:  # dropping: the selector closes it
            self._mark_dirty(conn)
        return queued

    def _mark_dirty(self, conn: Connection) -> None:
        with self._dirty_lock:
            first = not self._dirty
            self._dirty.add(conn)
        if first:
            self._wake()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # full: the selector is awake anyway
            self._wake_w.send(b"\0")

    def _run(self, conn: Connection, rid: RequestId, op: str, args: dict[str, Any]) -> None:
        """A worker: perform one request and queue its reply."""
        call = Call(
            host=self.host, args=args, socket_path=self.path,
            emit=lambda event: self._send(conn, event_message(rid, event)),
            on_close=conn.on_close,
        )
        streaming = False
        try:
            result = OPS[op][0](call)
            streaming = result is STREAMING
            reply = None if streaming else ok_reply(rid, result)
        except Exception as exc:
            if not isinstance(exc, LivemodError):
                _log.exception("livemod control: %s failed unexpectedly", op)
            reply = error_reply(rid, exc)
            del exc
        if reply is not None:
            self._send(conn, reply)
        conn.end(streaming=streaming)
        self._mark_dirty(conn)  # a half-closed client may now be closed

    def __repr__(self) -> str:
        state = "serving" if self._thread and not self._stopping.is_set() else "stopped"
        return f"<livemod.control.ControlServer {self.path} {state}>"
