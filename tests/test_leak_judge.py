"""Leak verdicts off the unload's path (_leak_judge): who collects, when, and who waits."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import livemod
from conftest import wait_for

pytestmark = [pytest.mark.usefixtures("no_stray_threads"), pytest.mark.asserts_leak]

MODULES = Path(__file__).parent / "fixtures" / "modules"


class FullCollections:
    """The threads that started a full (generation 2) collection, one entry per start."""

    def __init__(self) -> None:
        self.threads: list[str] = []

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start" and info["generation"] == 2:
            self.threads.append(threading.current_thread().name)


@pytest.fixture
def collections() -> Iterator[FullCollections]:
    seen = FullCollections()
    gc.callbacks.append(seen)
    try:
        yield seen
    finally:
        gc.callbacks.remove(seen)


def _write(folder: Path, count: int) -> list[Path]:
    paths = []
    for i in range(count):
        p = folder / f"plain_{i}.py"
        p.write_text(f"__livemod__ = {{'name': 'plain_{i}'}}\n\ndef f():\n    return {i}\n\n"
                     f"def init(mod):\n    mod.hook('plain.f').add(f)\n")
        paths.append(p)
    return paths


def test_rmmod_runs_no_full_collection_on_the_caller(
        host: livemod.Host, collections: FullCollections) -> None:
    host.insmod(str(MODULES / "basic.py"))
    me = threading.current_thread().name
    host.rmmod("basic")
    # Whatever the judge did meanwhile, it was not on the unloading thread ...
    assert me not in collections.threads, collections.threads
    # ... and asking for verdicts waits for it.
    assert host.leaks() == [] and host.tainted == ()
    assert "livemod-leak-judge" in collections.threads


def test_a_leak_found_after_rmmod_returned_reaches_every_reader(host: livemod.Host) -> None:
    host.insmod(str(MODULES / "leaky.py"))
    kept: list[Any] = []
    host.hook("leaky.give")(kept)
    host.rmmod("leaky")
    # Each reader below waits for the verdict the judge still owes (none of them sleeps).
    assert [t.flag for t in host.tainted] == ["module-leaked"]
    assert host.statistics().leaked == 1
    assert any(e.kind == "taint" and e.module == "leaky" for e in host.events())
    [leak] = host.leaks()
    assert leak.name == "leaky" and any("leaky.handler" in c for c in leak.chains)
    kept.clear()
    assert host.leaks() == []


def test_a_burst_of_unloads_shares_one_collection(
        tmp_path: Path, collections: FullCollections) -> None:
    paths = _write(tmp_path, 12)
    with livemod.Host(timeout=5.0) as h:
        for p in paths:
            h.insmod(p)
        before = len(collections.threads)
        for i in range(len(paths)):
            h.rmmod(f"plain_{i}")
        assert h.leaks() == []
        by_judge = collections.threads[before:].count("livemod-leak-judge")
        # One collection per batch (plus leaks()'s own): far fewer than one per unload.
        assert 1 <= by_judge < len(paths) // 2, collections.threads[before:]


def test_a_listener_reading_the_log_inside_a_verdict_does_not_wait_for_itself(
        host: livemod.Host) -> None:
    seen: list[int] = []
    done = threading.Event()

    def listener(event: livemod.Event) -> None:
        if event.kind == "taint":
            seen.append(len(host.events()))  # on the judge's thread: must not wait for it
            done.set()

    host.on_event(listener)
    host.insmod(str(MODULES / "leaky.py"))
    kept: list[Any] = []
    host.hook("leaky.give")(kept)
    host.rmmod("leaky")
    assert done.wait(30), "the verdict's listener never returned"
    assert seen and seen[0] > 0
    kept.clear()


def test_the_judge_thread_ends_with_its_host(tmp_path: Path) -> None:
    [p] = _write(tmp_path, 1)
    h = livemod.Host(timeout=5.0)
    h.insmod(p)
    h.rmmod("plain_0")
    judges = [t for t in threading.enumerate() if t.name == "livemod-leak-judge"]
    assert judges, "rmmod with the leak check on hands its watch to a judge thread"
    h.close()
    wait_for(lambda: not any(t.is_alive() for t in judges), 10, "the judge to end")
