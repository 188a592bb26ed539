"""The etcd client over the JSON gateway, against a real etcd started by the test."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from etcd_support import EtcdServer, requires_etcd
from livemod import EngineUnreachable, LivemodError
from livemod.etcd import Compacted, EngineError, EtcdClient, Watch
from livemod.etcd._client import prefix_end

pytestmark = requires_etcd


@pytest.fixture(scope="module")
def etcd() -> Iterator[EtcdServer]:
    server = EtcdServer()
    yield server
    server.close()


@pytest.fixture
def client(etcd: EtcdServer) -> Iterator[EtcdClient]:
    c = EtcdClient(etcd.url, timeout=5)
    yield c
    c.close()


def test_put_range_delete_under_a_prefix(client: EtcdClient) -> None:
    rev = client.put("/t1/a", b"1")
    client.put("/t1/b", b"\x00\xff binary")
    client.put("/t10", b"not under /t1/")
    kvs, now = client.range("/t1/", prefix=True)
    assert [(kv.key, kv.value) for kv in kvs] == [("/t1/a", b"1"), ("/t1/b", b"\x00\xff binary")]
    assert now >= rev + 2 and kvs[0].create_revision == rev
    assert client.get("/t1/missing") is None
    assert client.delete("/t1/", prefix=True) == 2
    assert client.get("/t10") is not None
    assert prefix_end("/a") == b"/b" and prefix_end("") == b"\0"


def test_create_once_and_compare_and_swap(client: EtcdClient) -> None:
    assert client.create("/t2/decision", b"commit") == (True, None)
    wrote, held = client.create("/t2/decision", b"abort")
    assert not wrote and held is not None and held.value == b"commit"
    kv = client.get("/t2/decision")
    assert kv is not None
    assert client.swap("/t2/decision", b"x", kv.mod_revision)
    assert not client.swap("/t2/decision", b"y", kv.mod_revision)  # someone wrote first
    assert client.get("/t2/decision").value == b"x"  # type: ignore[union-attr]
    assert client.swap("/t2/new", b"z", 0)  # 0: only if absent
    assert not client.swap("/t2/new", b"z2", 0)


def test_a_lease_expires_as_a_delete_event(client: EtcdClient) -> None:
    lease = client.grant(2)
    rev = client.put("/t3/machine", b"m1", lease=lease)
    assert client.keepalive(lease) == 2
    with Watch(client, "/t3/", start_revision=rev + 1) as watch:
        started = time.monotonic()
        events = None
        while not events:
            events = watch.wait(10)
            assert time.monotonic() - started < 10, "the lease did not expire"
        noticed = time.monotonic() - started
    assert [(e.kind, e.key) for e in events] == [("DELETE", "/t3/machine")]
    assert 1.0 < noticed < 8.0, noticed
    assert client.keepalive(lease) == 0  # gone
    assert client.get("/t3/machine") is None


def test_revoke_deletes_at_once(client: EtcdClient) -> None:
    lease = client.grant(60)
    client.put("/t4/k", b"v", lease=lease)
    client.revoke(lease)
    assert client.get("/t4/k") is None
    client.revoke(lease)  # twice is harmless


def test_a_watch_from_a_compacted_revision_says_so(client: EtcdClient) -> None:
    first = client.put("/t5/k", b"1")
    last = client.put("/t5/k", b"2")
    with Watch(client, "/t5/", start_revision=first) as watch:  # not compacted: both events
        seen: list[bytes] = []
        while len(seen) < 2:
            events = watch.wait(5)
            assert events is not None
            seen += [e.value for e in events]
        assert seen == [b"1", b"2"] and watch.next_revision == last + 1
    client.compact(last)
    with pytest.raises(Compacted) as info, Watch(client, "/t5/", start_revision=first) as w:
        for _ in range(10):
            w.wait(1)
    assert info.value.revision == last


def test_an_unreachable_engine_is_a_clear_error() -> None:
    c = EtcdClient("http://127.0.0.1:9", timeout=1)
    with pytest.raises(EngineUnreachable, match=r"etcd at http://127.0.0.1:9 did not answer"):
        c.get("/x")
    with pytest.raises(LivemodError, match="is not usable"):
        EtcdClient("127.0.0.1:2379")


def test_not_an_etcd_is_a_clear_error(etcd: EtcdServer) -> None:
    c = EtcdClient(etcd.url)
    with pytest.raises(EngineError, match="kv/nothing"):
        c.call("/v3/kv/nothing", {})
