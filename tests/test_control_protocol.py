"""The control protocol's framing, checking and error mapping (no sockets here)."""

from __future__ import annotations

import json
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import livemod
from livemod.control import HostUnreachable, NotSupported, PermissionDenied, TooManyClients
from livemod.control.protocol import (
    VERSION,
    Decoder,
    encode,
    error_from_wire,
    error_reply,
    error_to_wire,
    event_message,
    ok_reply,
    request,
)

#: Examples per fuzz test: small in CI; LIVEMOD_FUZZ_EXAMPLES=20000 for a long run.
FUZZ_EXAMPLES = int(os.environ.get("LIVEMOD_FUZZ_EXAMPLES", "200"))


def _all(dec: Decoder) -> list[object]:
    """Every message and error the decoder yields until it needs more bytes."""
    out: list[object] = []
    while True:
        try:
            out.append(next(dec))
        except StopIteration:
            return out
        except livemod.ProtocolError as exc:
            out.append(exc)


def test_round_trip_in_arbitrary_chunks() -> None:
    msgs = [request(i, "lsmod", {"x": "é\u2028\n"}) for i in range(5)]
    data = b"".join(encode(m) for m in msgs)
    assert data.isascii() and data.count(b"\n") == 5  # newlines in strings are escaped
    for size in (1, 2, 7, len(data)):
        dec = Decoder(kind="request")
        got: list[object] = []
        for i in range(0, len(data), size):
            dec.feed(data[i : i + size])
            got += _all(dec)
        assert got == msgs
        assert dec.pending == 0


@pytest.mark.parametrize(
    ("line", "words"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        (b'"text"', "JSON object"),
        (b'{"id": 1, "op": "lsmod"}', "missing field 'v'"),
        (b'{"v": 2, "id": 1, "op": "lsmod"}', "version 2"),
        (b'{"v": true, "id": 1, "op": "lsmod"}', "version"),
        (b'{"v": 1, "op": "lsmod"}', "missing field 'id'"),
        (b'{"v": 1, "id": null, "op": "lsmod"}', "'id'"),
        (b'{"v": 1, "id": [1], "op": "lsmod"}', "'id'"),
        (b'{"v": 1, "id": 1}', "'op'"),
        (b'{"v": 1, "id": 1, "op": 5}', "'op'"),
        (b'{"v": 1, "id": 1, "op": "x", "args": [1]}', "'args'"),
        (b'{"v": 1, "id": 1, "op": "x", "args": {"a": NaN}}', "not valid JSON"),
        (b"\xff\xfe{}", "UTF-8"),
        (b"[" * 100_000 + b"]" * 100_000, "message"),
    ],
)
def test_bad_lines_raise_protocol_error_and_the_next_line_still_decodes(
    line: bytes, words: str
) -> None:
    dec = Decoder(kind="request", max_message=1 << 20)
    dec.feed(line + b"\n" + encode(request(2, "lsmod", {})))
    first, second = _all(dec)
    assert isinstance(first, livemod.ProtocolError)
    assert first.code == "protocol-error"
    assert words in str(first)
    assert second == request(2, "lsmod", {})


def test_request_id_is_kept_on_a_bad_request() -> None:
    dec = Decoder(kind="request")
    dec.feed(b'{"v": 1, "id": 42, "op": 7}\n')
    (err,) = _all(dec)
    assert isinstance(err, livemod.ProtocolError) and err.request_id == 42


def test_oversized_message_is_refused_before_its_end_and_skipped() -> None:
    dec = Decoder(kind="request", max_message=100)
    dec.feed(b"x" * 60)
    assert _all(dec) == [] and not dec.overflowed
    dec.feed(b"x" * 60)  # now over the limit, still no newline: refused at once
    (err,) = _all(dec)
    assert isinstance(err, livemod.ProtocolError) and "limit of 100" in str(err)
    assert dec.overflowed and dec.pending == 0
    dec.feed(b"y" * 1000)  # the rest of it is discarded as it arrives
    assert dec.pending == 0
    dec.feed(b"zz\n" + encode(request(1, "status", {})))
    assert _all(dec) == [request(1, "status", {})]


def test_complete_line_over_the_limit() -> None:
    dec = Decoder(max_message=40)
    dec.feed(encode(request(1, "lsmod", {"pad": "x" * 50})) + encode({"v": 1, "id": 2, "op": "a"}))
    err, ok = _all(dec)
    assert isinstance(err, livemod.ProtocolError)
    assert ok == {"v": 1, "id": 2, "op": "a", "args": {}}


def test_blank_lines_are_ignored() -> None:
    dec = Decoder()
    dec.feed(b"\n  \r\n" + encode(ok_reply(1, None)))
    assert _all(dec) == [ok_reply(1, None)]


def test_reply_shapes() -> None:
    dec = Decoder(kind="reply")
    good = [ok_reply(1, [1]), event_message(1, {"k": 1}), error_reply(None, PermissionDenied("no"))]
    dec.feed(b"".join(encode(m) for m in good))
    assert _all(dec) == good
    for bad in ({"v": 1, "id": 1}, {"v": 1, "id": 1, "ok": True},
                {"v": 1, "id": 1, "ok": False, "error": {"code": 1}},
                {"v": 1, "id": 1, "event": []}):
        dec.feed(json.dumps(bad).encode() + b"\n")
        (err,) = _all(dec)
        assert isinstance(err, livemod.ProtocolError)


def test_encode_refuses_what_is_not_json_and_what_is_too_long() -> None:
    with pytest.raises(livemod.ProtocolError):
        encode({"v": 1, "x": object()})
    with pytest.raises(livemod.ProtocolError):
        encode({"v": 1, "x": float("nan")})
    with pytest.raises(livemod.ProtocolError):
        encode({"v": 1, "x": "y" * 100}, limit=50)


@pytest.mark.parametrize(
    "exc",
    [
        livemod.ModuleNotFound("no greet", module="greet"),
        livemod.ModuleExists("again"),
        livemod.ManifestError("bad", path="/m.py", line=3, field="name"),
        livemod.errors.ConfigError("bad key", path="/l.toml", line=2, key="host.timeout"),
        livemod.InitError("boom"),
        livemod.DependencyError("cycle", chain=("a", "b", "a")),
        livemod.ModuleBusy("busy", module="greet", holders=("hold at x.py:3", "module 'web'")),
        livemod.ModuleGoing("going"),
        livemod.ParamError("bad param"),
        livemod.SignatureError("unsigned"),
        livemod.ProtocolError("garbled"),
        HostUnreachable("gone"),
        PermissionDenied("nope"),
        NotSupported("cannot"),
        TooManyClients("full"),
    ],
)
def test_errors_map_to_codes_and_back(exc: livemod.LivemodError) -> None:
    wire = json.loads(encode(error_to_wire(exc)))
    back = error_from_wire(wire)
    assert type(back) is type(exc)
    assert str(back) == str(exc) and back.code == exc.code and back.module == exc.module
    for attr in ("holders", "chain", "path", "line", "field", "key"):
        assert getattr(back, attr, None) == getattr(exc, attr, None)


def test_unknown_code_and_internal_errors() -> None:
    back = error_from_wire({"code": "from-the-future", "message": "m"})
    assert type(back) is livemod.LivemodError and back.code == "from-the-future"
    wire = error_to_wire(KeyError("k"))
    assert wire["code"] == "internal-error" and "KeyError" in wire["message"]


_frames = st.lists(
    st.one_of(
        st.binary(max_size=200),
        st.builds(lambda m: encode(m), st.dictionaries(
            st.sampled_from(["v", "id", "op", "args", "ok", "result", "error", "event"]),
            st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                         lambda c: st.lists(c, max_size=3)
                         | st.dictionaries(st.text(max_size=5), c, max_size=3),
                         max_leaves=8),
        )),
        st.just(encode(request(1, "lsmod", {}))),
        st.just(b"\n"),
        st.integers(0, 300).map(lambda n: b"{" * n),
    ),
    max_size=12,
)


@settings(max_examples=FUZZ_EXAMPLES, deadline=None)
@given(frames=_frames, cut=st.integers(1, 64), kind=st.sampled_from(["request", "reply", "any"]),
       limit=st.integers(8, 400))
def test_only_protocol_error_escapes_on_arbitrary_bytes(
    frames: list[bytes], cut: int, kind: str, limit: int
) -> None:
    data = b"".join(frames)
    dec = Decoder(kind=kind, max_message=limit)  # type: ignore[arg-type]
    for i in range(0, len(data), cut):  # fed truncated at arbitrary points
        dec.feed(data[i : i + cut])
        for item in _all(dec):
            if not isinstance(item, livemod.ProtocolError):
                assert isinstance(item, dict) and item["v"] == VERSION
        assert dec.pending <= limit + cut
