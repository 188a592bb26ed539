"""Module operations switch threads quickly while they run, and restore the interval."""

from __future__ import annotations

import gc
import sys
import threading
from pathlib import Path

import pytest

import livemod
from livemod._switching import COLLECT, QUICK, collecting, quick_switching

pytestmark = pytest.mark.usefixtures("no_stray_threads")

BASIC = str(Path(__file__).parent / "fixtures" / "modules" / "basic.py")


def test_rmmod_and_replace_lower_the_interval_while_they_run(host: livemod.Host) -> None:
    seen: list[float] = []
    host.insmod(BASIC)
    host.subscribe(lambda *_: seen.append(sys.getswitchinterval()))
    before = sys.getswitchinterval()
    host.replace("basic")
    host.rmmod("basic")
    assert seen and all(s <= QUICK for s in seen), seen
    assert sys.getswitchinterval() == before


def test_overlapping_operations_restore_what_the_first_found() -> None:
    before = sys.getswitchinterval()
    inner_in, inner_out = threading.Event(), threading.Event()

    def other() -> None:
        with quick_switching():
            inner_in.set()
            inner_out.wait(5)

    t = threading.Thread(target=other)
    with quick_switching():
        t.start()
        assert inner_in.wait(5)
    assert sys.getswitchinterval() <= QUICK  # the other one still runs
    inner_out.set()
    t.join(5)
    assert sys.getswitchinterval() == before


def test_a_setting_made_meanwhile_stands() -> None:
    before = sys.getswitchinterval()
    try:
        with quick_switching():
            sys.setswitchinterval(0.002)
        assert sys.getswitchinterval() == 0.002
    finally:
        sys.setswitchinterval(before)


def test_a_collection_during_an_operation_raises_the_interval_and_puts_it_back() -> None:
    before = sys.getswitchinterval()
    with quick_switching():
        quick = sys.getswitchinterval()
        with collecting():
            assert sys.getswitchinterval() == pytest.approx(min(COLLECT, before))
            with collecting():  # nested (another host's leak check): one raise
                pass
            assert sys.getswitchinterval() == pytest.approx(min(COLLECT, before))
        assert sys.getswitchinterval() == quick
    assert sys.getswitchinterval() == before
    with collecting():  # no operation lowered it: the user's interval is left alone
        assert sys.getswitchinterval() == before


def test_the_last_operation_ending_during_a_collection_restores_what_it_found() -> None:
    before = sys.getswitchinterval()
    operation, collection = quick_switching(), collecting()
    operation.__enter__()
    collection.__enter__()
    operation.__exit__(None, None, None)
    assert sys.getswitchinterval() == before
    collection.__exit__(None, None, None)
    assert sys.getswitchinterval() == before


@pytest.mark.asserts_leak  # no leak check, so no collection, where no verdict is possible
def test_the_leak_judge_collects_at_the_longer_interval_while_an_operation_runs(
        host: livemod.Host) -> None:
    seen: list[float] = []

    def phase(what: str, info: dict[str, int]) -> None:
        if (what == "start" and info["generation"] == 2
                and threading.current_thread().name == "livemod-leak-judge"):
            seen.append(sys.getswitchinterval())

    host.insmod(BASIC)
    before = sys.getswitchinterval()
    gc.callbacks.append(phase)
    try:
        with quick_switching():  # another operation (of any host) is still running
            host.rmmod("basic")
            host.statistics()  # waits for the verdict, so for the judge's collection
    finally:
        gc.callbacks.remove(phase)
    assert seen == [pytest.approx(min(COLLECT, before))], seen
