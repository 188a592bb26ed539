"""The control protocol: one small, versioned JSON object per line.

Framing is newline-delimited UTF-8 JSON (the encoder emits ASCII only, so a message never
contains a raw newline and is valid UTF-8 whatever its strings hold). Every message carries
``"v": 1`` and the request id it belongs to::

    request  {"v":1,"id":7,"op":"rmmod","args":{"name":"greet","wait":true}}
    event    {"v":1,"id":7,"event":{"kind":"progress","pending":["..."],"message":"..."}}
    reply    {"v":1,"id":7,"ok":true,"result":null}
    error    {"v":1,"id":7,"ok":false,"error":{"code":"module-busy","message":"...",
                                               "module":"greet","holders":["..."]}}

A request gets any number of events and then exactly one reply -- except a streaming
request (``log`` with ``follow``), whose events go on until the client disconnects. An
error about the connection itself (refused peer, too many clients, a line that is not a
message) has ``"id": null``.

Nothing is ever unpickled: a message is only ever JSON, checked field by field, and every
way bytes can be wrong ends in :class:`~livemod.errors.ProtocolError`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any, Final, Literal

from .. import errors
from ..errors import LivemodError, ProtocolError
from . import errors as control_errors

__all__ = [
    "MAX_MESSAGE",
    "MAX_REPLY",
    "VERSION",
    "Decoder",
    "RequestId",
    "check_message",
    "encode",
    "error_from_wire",
    "error_reply",
    "error_to_wire",
    "event_message",
    "ok_reply",
    "parse_line",
    "request",
]

#: The protocol version this side speaks; a message with another ``v`` is refused.
VERSION: Final = 1
#: Default size limit (bytes, newline excluded) of one request.
MAX_MESSAGE: Final = 64 * 1024
#: Default size limit of one reply as the client reads it: replies (``lsmod`` of a host with
#: thousands of modules) are bigger than requests, and come from a host the client chose.
MAX_REPLY: Final = 16 * 1024 * 1024
#: Longest string id accepted (ids are echoed back, so they must stay small).
_MAX_ID_LEN: Final = 128
#: Error attributes carried on the wire besides code and message, when a class has them.
_EXTRAS: Final = ("holders", "chain", "path", "line", "field", "key", "owner_pid", "votes")

RequestId = int | str | None
Kind = Literal["request", "reply", "any"]


def encode(message: Mapping[str, Any], *, limit: int | None = None) -> bytes:
    """One message as bytes on the wire (ASCII JSON plus ``\\n``).

    Raises:
        ProtocolError: the message is not JSON-serialisable or is longer than ``limit``.
    """
    try:
        text = json.dumps(message, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise ProtocolError(f"cannot encode message: {exc}") from None
    data = text.encode("ascii") + b"\n"
    if limit is not None and len(data) - 1 > limit:
        raise ProtocolError(f"message of {len(data) - 1} bytes exceeds the limit of {limit}")
    return data


def request(request_id: int | str, op: str, args: Mapping[str, Any]) -> dict[str, Any]:
    """A request message."""
    return {"v": VERSION, "id": request_id, "op": op, "args": dict(args)}


def ok_reply(request_id: RequestId, result: Any) -> dict[str, Any]:
    """The final, successful reply to a request."""
    return {"v": VERSION, "id": request_id, "ok": True, "result": result}


def error_reply(request_id: RequestId, exc: BaseException) -> dict[str, Any]:
    """The final reply saying why a request failed (``id`` null: about the connection)."""
    return {"v": VERSION, "id": request_id, "ok": False, "error": error_to_wire(exc)}


def event_message(request_id: RequestId, event: Mapping[str, Any]) -> dict[str, Any]:
    """An intermediate message of a request: progress, or an entry of a followed log."""
    return {"v": VERSION, "id": request_id, "event": dict(event)}


# -- errors both ways ------------------------------------------------------------------------


def _error_classes() -> dict[str, type[LivemodError]]:
    found: dict[str, type[LivemodError]] = {}
    for module in (errors, control_errors):
        for name in module.__all__:
            cls = getattr(module, name)
            if isinstance(cls, type) and issubclass(cls, LivemodError):
                found.setdefault(cls.code, cls)
    return found


_BY_CODE: Final = _error_classes()


def error_to_wire(exc: BaseException) -> dict[str, Any]:
    """The ``error`` object of a reply: ``code``, ``message`` and the class's extra fields.

    An exception that is not a :class:`LivemodError` is a bug in the host or the server;
    it is reported as ``internal-error`` with its type and message (never its traceback).
    """
    if not isinstance(exc, LivemodError):
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return {"code": "internal-error", "message": f"internal error in the host: {text}"}
    wire: dict[str, Any] = {"code": exc.code, "message": str(exc)}
    if exc.module is not None:
        wire["module"] = exc.module
    for name in _EXTRAS:
        value = getattr(exc, name, None)
        if value is None:
            continue
        wire[name] = list(value) if isinstance(value, tuple | list) else value
    return wire


def error_from_wire(wire: Mapping[str, Any]) -> LivemodError:
    """The exception a reply's ``error`` object stands for: the class with that ``code``
    (a plain :class:`LivemodError` keeping the code for one this side does not know)."""
    code = str(wire.get("code", "livemod-error"))
    message = str(wire.get("message", "(no message)"))
    module = wire.get("module")
    cls = _BY_CODE.get(code, LivemodError)
    exc = cls(message, module=module if isinstance(module, str) else None)
    if cls is LivemodError:
        exc.code = code
    for name in _EXTRAS:
        if name not in wire or not hasattr(exc, name):
            continue
        value = wire[name]
        setattr(exc, name, tuple(str(v) for v in value) if isinstance(value, list) else value)
    return exc


# -- decoding --------------------------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _check_id(value: object, *, nullable: bool) -> RequestId:
    if value is None and nullable:
        return None
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ProtocolError(f"field 'id' must be a number or a string, not {value!r:.40}")
    if isinstance(value, str) and len(value) > _MAX_ID_LEN:
        raise ProtocolError(f"field 'id' is longer than {_MAX_ID_LEN} characters")
    return value


def check_message(obj: object, kind: Kind) -> dict[str, Any]:
    """Check one decoded JSON value is a well-formed message of ``kind``; return it.

    Raises:
        ProtocolError: naming the missing or wrong field (with ``request_id`` when known).
    """
    if not isinstance(obj, dict):
        raise ProtocolError(f"a message must be a JSON object, not {type(obj).__name__}")
    version = obj.get("v")
    if "v" not in obj:
        raise ProtocolError(f"missing field 'v' (the protocol version; this side speaks {VERSION})")
    if isinstance(version, bool) or version != VERSION:
        raise ProtocolError(f"unsupported protocol version {version!r:.20} "
                            f"(this side speaks {VERSION})")
    if "id" not in obj:
        raise ProtocolError("missing field 'id' (the request id the message belongs to)")
    rid = _check_id(obj["id"], nullable=kind != "request")
    try:
        if kind == "request" or (kind == "any" and "op" in obj):
            _check_request(obj)
        elif kind == "reply" or "ok" in obj or "event" in obj:
            _check_reply(obj)
        else:
            raise ProtocolError("a message needs 'op' (a request), 'ok' or 'event' (a reply)")
    except ProtocolError as exc:
        exc.request_id = rid
        raise
    return obj


def _check_request(obj: dict[str, Any]) -> None:
    op = obj.get("op")
    if not isinstance(op, str) or not op:
        raise ProtocolError("field 'op' (the operation, e.g. \"lsmod\") must be a string")
    if not isinstance(obj.setdefault("args", {}), dict):
        raise ProtocolError("field 'args' must be a JSON object")


def _check_reply(obj: dict[str, Any]) -> None:
    if "event" in obj:
        if not isinstance(obj["event"], dict):
            raise ProtocolError("field 'event' must be a JSON object")
        return
    ok = obj.get("ok")
    if ok is True:
        if "result" not in obj:
            raise ProtocolError("a successful reply needs a 'result' field")
    elif ok is False:
        error = obj.get("error")
        if not (isinstance(error, dict) and isinstance(error.get("code"), str)
                and isinstance(error.get("message"), str)):
            raise ProtocolError("a failed reply needs 'error' with string 'code' and 'message'")
    else:
        raise ProtocolError("a reply needs 'ok' (true or false) or 'event'")


def parse_line(line: bytes, kind: Kind = "any") -> dict[str, Any]:
    """Decode and check one message (without its newline)."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"message is not valid UTF-8 (byte {exc.start})") from None
    try:
        obj = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise ProtocolError("message is nested too deeply") from None
    except ValueError as exc:
        raise ProtocolError(f"message is not valid JSON: {exc}") from None
    return check_message(obj, kind)


class Decoder:
    """Turns bytes, fed as they arrive, into complete checked messages.

    ``feed(data)`` only buffers; iterate to take the complete messages. A bad line raises
    :class:`ProtocolError` from the iteration and is dropped, so iterating again carries on
    with the next one. A message longer than ``max_message`` raises once it is known to be
    too long (without waiting for its end); the rest of it is discarded as it arrives and
    ``overflowed`` stays true. Blank lines are ignored. Nothing but ProtocolError escapes.
    """

    def __init__(self, *, max_message: int = MAX_MESSAGE, kind: Kind = "any") -> None:
        self.max_message = max_message
        self.kind: Kind = kind
        self.overflowed = False
        self._buf = bytearray()
        self._scanned = 0  # bytes of _buf already known to hold no newline
        self._skipping = False

    @property
    def pending(self) -> int:
        """Bytes buffered that do not yet form a complete message."""
        return len(self._buf)

    def feed(self, data: bytes) -> None:
        """Buffer ``data``."""
        if self._skipping:
            end = data.find(b"\n")
            if end < 0:
                return
            data = data[end + 1 :]
            self._skipping = False
        self._buf += data

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self

    def __next__(self) -> dict[str, Any]:
        while True:
            end = self._buf.find(b"\n", self._scanned)
            if end < 0:
                if len(self._buf) > self.max_message:
                    self._buf.clear()
                    self._scanned = 0
                    self._skipping = self.overflowed = True
                    raise ProtocolError(
                        f"message longer than the limit of {self.max_message} bytes"
                    )
                self._scanned = len(self._buf)
                raise StopIteration
            line = bytes(self._buf[:end])
            del self._buf[: end + 1]
            self._scanned = 0
            if len(line) > self.max_message:
                self.overflowed = True
                raise ProtocolError(f"message of {len(line)} bytes is longer than the limit "
                                    f"of {self.max_message}")
            if line.strip():
                return parse_line(line, self.kind)
