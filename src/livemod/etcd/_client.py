"""A small etcd v3 client over etcd's JSON gateway (``/v3/*``), standard library only.

Why our own: PyPI's ``etcd3`` (0.12.0, last released 2020) fails to import against a
current protobuf ("Descriptors cannot be created directly"), and the maintained clients
pull in gRPC or requests. etcd's gRPC gateway answers the same API as JSON over HTTP/1.1,
which ``http.client`` speaks; so livemod keeps its core free of protobuf and of any
third-party package, and this file is the whole of what it needs: ranges, puts, deletes,
transactions (compare-and-swap, create-once), leases, compaction and authentication.
The streaming watch is in ``_watch``.

Keys and values are bytes on the wire, base64 in the JSON; here keys are ``str`` and
values ``bytes``. 64-bit numbers (revisions, lease ids) come as JSON strings and fields
equal to their zero value are left out, as protobuf's JSON mapping does: every read below
defaults them.

Every request goes over one keep-alive connection per thread (``http.client`` connections
are not thread-safe). A connection error or timeout becomes
:class:`~livemod.errors.EngineUnreachable`; an error etcd answers with becomes
:class:`EngineError`. A request is retried once on a fresh connection when the kept one was
closed by the server under us (an idle keep-alive timeout), never after a timeout: a put
that timed out may have been applied, and only the caller knows whether repeating is safe.
"""

from __future__ import annotations

import base64
import http.client
import json
import ssl
import threading
import urllib.parse
from dataclasses import dataclass
from typing import Any, Final

from ..errors import EngineUnreachable, LivemodError

__all__ = ["KV", "EngineError", "EtcdClient", "b64", "compare_created", "compare_modified",
           "delete_op", "kv_from", "prefix_end", "put_op", "range_op", "unb64"]

#: gRPC's code for an expired or invalid auth token: authenticate again and retry.
_UNAUTHENTICATED: Final = 16


class EngineError(LivemodError):
    """etcd answered with an error (``code`` is gRPC's status code, ``grpc_code``)."""

    code = "engine-error"

    def __init__(self, message: str, *, grpc_code: int = 0) -> None:
        super().__init__(message)
        self.grpc_code = grpc_code


@dataclass(frozen=True)
class KV:
    """One key as etcd returns it."""

    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int

    def json(self) -> Any:
        """The value parsed as JSON (the records livemod writes are JSON objects)."""
        return json.loads(self.value)


def b64(data: str | bytes) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def unb64(text: str) -> bytes:
    return base64.b64decode(text) if text else b""


def prefix_end(prefix: str) -> bytes:
    """The ``range_end`` that makes a range cover every key starting with ``prefix``."""
    raw = bytearray(prefix.encode())
    while raw and raw[-1] == 0xFF:
        raw.pop()
    if not raw:
        return b"\0"
    raw[-1] += 1
    return bytes(raw)


def kv_from(item: dict[str, Any]) -> KV:
    """A KV from its JSON (a range's ``kvs`` entry)."""
    return KV(unb64(item.get("key", "")).decode(errors="surrogateescape"),
              unb64(item.get("value", "")), int(item.get("create_revision", 0)),
              int(item.get("mod_revision", 0)), int(item.get("version", 0)),
              int(item.get("lease", 0)))


class EtcdClient:
    """etcd's KV and lease API over the JSON gateway.

    Args:
        url: ``http://host:port`` or ``https://host:port`` of one etcd member.
        timeout: seconds each request may take before :class:`EngineUnreachable`.
        ca_file, cert_file, key_file: TLS: the CA to trust, and a client certificate.
        user, password: etcd authentication (a token is fetched and renewed).
    """

    def __init__(self, url: str, *, timeout: float = 5.0, ca_file: str | None = None,
                 cert_file: str | None = None, key_file: str | None = None,
                 user: str | None = None, password: str | None = None) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise LivemodError(f"etcd URL {url!r} is not usable: give http://HOST:PORT or "
                               f"https://HOST:PORT (--etcd)")
        self.url = f"{parts.scheme}://{parts.netloc}"
        self.timeout = timeout
        self._host = parts.hostname
        self._port = parts.port or 2379
        self._tls: ssl.SSLContext | None = None
        if parts.scheme == "https":
            self._tls = ssl.create_default_context(cafile=ca_file)
            if cert_file:
                self._tls.load_cert_chain(cert_file, key_file)
        self._auth = (user, password) if user else None
        self._token: str | None = None
        self._local = threading.local()

    # ------------------------------------------------------------------ transport

    def connection(self, timeout: float | None) -> http.client.HTTPConnection:
        """A new connection to the member (the watch keeps one of its own)."""
        if self._tls is not None:
            return http.client.HTTPSConnection(self._host, self._port, timeout=timeout,
                                               context=self._tls)
        return http.client.HTTPConnection(self._host, self._port, timeout=timeout)

    def headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self._auth is not None:
            if self._token is None:
                self._token = self._authenticate()
            headers["Authorization"] = self._token
        return headers

    def _authenticate(self) -> str:
        assert self._auth is not None
        user, password = self._auth
        reply = self._send("/v3/auth/authenticate", {"name": user, "password": password or ""},
                           {"Content-Type": "application/json"}, self.timeout)
        return str(reply.get("token", ""))

    def unreachable(self, exc: BaseException) -> EngineUnreachable:
        return EngineUnreachable(f"etcd at {self.url} did not answer ({exc}); is it running "
                                 f"and is --etcd right?", url=self.url)

    def _send(self, path: str, body: dict[str, Any], headers: dict[str, str],
              timeout: float) -> dict[str, Any]:
        data = json.dumps(body).encode()
        for attempt in (0, 1):
            conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
            fresh = conn is None
            if conn is None:
                conn = self._local.conn = self.connection(timeout)
            conn.timeout = timeout
            if conn.sock is not None:
                conn.sock.settimeout(timeout)
            try:
                conn.request("POST", path, data, headers)
                response = conn.getresponse()
                raw = response.read()
            except (http.client.RemoteDisconnected, BrokenPipeError,
                    ConnectionResetError) as exc:
                conn.close()
                self._local.conn = None
                if fresh or attempt:
                    raise self.unreachable(exc) from None
                continue  # the kept connection had been closed by the server: once more
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                self._local.conn = None
                raise self.unreachable(exc) from None
            return self._decode(path, response.status, raw)
        raise AssertionError("unreachable")  # pragma: no cover

    def _decode(self, path: str, status: int, raw: bytes) -> dict[str, Any]:
        try:
            reply = json.loads(raw) if raw else {}
        except ValueError:
            raise EngineError(f"etcd at {self.url} answered {path} with HTTP {status} and "
                              f"no JSON ({raw[:80]!r}): is --etcd an etcd v3 endpoint?"
                              ) from None
        if not isinstance(reply, dict):
            raise EngineError(f"etcd at {self.url} answered {path} with {reply!r}")
        if status != 200 or "error" in reply:
            code = int(reply.get("code", 0) or 0)
            message = reply.get("message") or reply.get("error") or f"HTTP {status}"
            raise EngineError(f"etcd at {self.url}: {path}: {message}", grpc_code=code)
        return reply

    def call(self, path: str, body: dict[str, Any], *, timeout: float | None = None
             ) -> dict[str, Any]:
        """POST ``body`` to ``path``; the reply (errors raised)."""
        limit = self.timeout if timeout is None else timeout
        try:
            return self._send(path, body, self.headers(), limit)
        except EngineError as exc:
            if exc.grpc_code != _UNAUTHENTICATED or self._auth is None:
                raise
            self._token = None  # expired: once more with a new token
            return self._send(path, body, self.headers(), limit)

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # ------------------------------------------------------------------------ KV

    def range(self, key: str, *, prefix: bool = False, keys_only: bool = False
              ) -> tuple[list[KV], int]:
        """The keys at ``key`` (or under it, with ``prefix``) and the store's revision."""
        body: dict[str, Any] = {"key": b64(key)}
        if prefix:
            body["range_end"] = b64(prefix_end(key))
        if keys_only:
            body["keys_only"] = True
        reply = self.call("/v3/kv/range", body)
        return ([kv_from(i) for i in reply.get("kvs", ())],
                int(reply.get("header", {}).get("revision", 0)))

    def get(self, key: str) -> KV | None:
        found, _ = self.range(key)
        return found[0] if found else None

    def put(self, key: str, value: bytes, *, lease: int = 0) -> int:
        """Write ``value`` at ``key`` (bound to ``lease`` if given); the new revision."""
        body: dict[str, Any] = {"key": b64(key), "value": b64(value)}
        if lease:
            body["lease"] = str(lease)
        return int(self.call("/v3/kv/put", body).get("header", {}).get("revision", 0))

    def delete(self, key: str, *, prefix: bool = False) -> int:
        """Delete ``key`` (or every key under it); how many were deleted."""
        body: dict[str, Any] = {"key": b64(key)}
        if prefix:
            body["range_end"] = b64(prefix_end(key))
        return int(self.call("/v3/kv/deleterange", body).get("deleted", 0))

    def txn(self, compare: list[dict[str, Any]], success: list[dict[str, Any]],
            failure: list[dict[str, Any]] | None = None) -> tuple[bool, list[Any], int]:
        """A transaction: (succeeded, responses, revision)."""
        reply = self.call("/v3/kv/txn", {"compare": compare, "success": success,
                                         "failure": failure or []})
        return (bool(reply.get("succeeded", False)), list(reply.get("responses", ())),
                int(reply.get("header", {}).get("revision", 0)))

    def create(self, key: str, value: bytes, *, lease: int = 0) -> tuple[bool, KV | None]:
        """Write ``key`` only if it does not exist (``create_revision == 0``): written
        once. Returns (True, None) if this call wrote it, else (False, the KV that holds)."""
        ok, responses, _ = self.txn([compare_created(key, 0)], [put_op(key, value, lease)],
                                    [range_op(key)])
        if ok:
            return True, None
        kvs = responses[0].get("response_range", {}).get("kvs", ()) if responses else ()
        return False, (kv_from(kvs[0]) if kvs else None)

    def swap(self, key: str, value: bytes, mod_revision: int, *, also: list[dict[str, Any]]
             | None = None) -> bool:
        """Compare-and-swap: write ``key`` (and the ``also`` ops) only if its
        ``mod_revision`` is still ``mod_revision`` (0: it must not exist)."""
        ok, _, _ = self.txn([compare_modified(key, mod_revision)],
                            [put_op(key, value), *(also or [])])
        return ok

    def compact(self, revision: int) -> None:
        self.call("/v3/kv/compaction", {"revision": str(revision), "physical": True})

    # --------------------------------------------------------------------- leases

    def grant(self, ttl: int) -> int:
        """A new lease of ``ttl`` seconds; its id."""
        return int(self.call("/v3/lease/grant", {"TTL": str(int(ttl))})["ID"])

    def keepalive(self, lease: int) -> int:
        """Renew ``lease``; its TTL afterwards (0: it has expired or was revoked)."""
        reply = self.call("/v3/lease/keepalive", {"ID": str(lease)})
        return int(reply.get("result", reply).get("TTL", 0))

    def revoke(self, lease: int) -> None:
        """End ``lease`` now: every key bound to it is deleted."""
        try:
            self.call("/v3/lease/revoke", {"ID": str(lease)})
        except EngineError as exc:
            if "not found" not in str(exc):
                raise


# ----------------------------------------------------------- transaction parts


def compare_created(key: str, revision: int) -> dict[str, Any]:
    return {"key": b64(key), "target": "CREATE", "result": "EQUAL",
            "create_revision": str(revision)}


def compare_modified(key: str, revision: int) -> dict[str, Any]:
    return {"key": b64(key), "target": "MOD", "result": "EQUAL", "mod_revision": str(revision)}


def put_op(key: str, value: bytes, lease: int = 0) -> dict[str, Any]:
    body: dict[str, Any] = {"key": b64(key), "value": b64(value)}
    if lease:
        body["lease"] = str(lease)
    return {"request_put": body}


def range_op(key: str) -> dict[str, Any]:
    return {"request_range": {"key": b64(key)}}


def delete_op(key: str, *, prefix: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {"key": b64(key)}
    if prefix:
        body["range_end"] = b64(prefix_end(key))
    return {"request_delete_range": body}

