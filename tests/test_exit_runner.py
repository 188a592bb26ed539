"""The spare exit thread (``livemod._exit_runner``): each exit on a fresh thread that was
started ahead of need, whose successor is started only once the unload is done.

Real threads throughout. ``_start`` is watched to see *which* thread starts a spare: the
unloading thread must not, except for the very first exit.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from livemod import _exit_runner
from livemod._exit_runner import IDLE, ExitRunner

pytestmark = pytest.mark.usefixtures("no_stray_threads")


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[ExitRunner, list[int]]]:
    """A runner, and the ident of the thread behind every spare start."""
    starters: list[int] = []
    real = ExitRunner._start

    def start(self: ExitRunner) -> _exit_runner._Spare:
        starters.append(threading.get_ident())
        return real(self)

    monkeypatch.setattr(ExitRunner, "_start", start)
    r = ExitRunner()
    try:
        yield r, starters
    finally:
        r.close()


def test_the_exit_thread_waits_for_the_unload_to_end_then_parks_its_successor(
    runner: tuple[ExitRunner, list[int]],
) -> None:
    r, starters = runner
    ran: list[int] = []
    first = r.run(lambda: ran.append(threading.get_ident()), "one", 5.0)
    assert first is not None and ran == [first.ident]
    assert starters == [threading.get_ident()]  # the first exit: nothing was parked yet
    # Until the unload is done, the exit's thread neither starts a successor nor ends.
    first.join(0.05)
    assert first.is_alive() and starters == [threading.get_ident()]
    r.resume()
    first.join(IDLE)
    assert not first.is_alive()
    assert len(starters) == 2 and starters[1] == first.ident  # its successor, by it


def test_an_exit_right_after_a_resume_takes_the_successor_on_its_way(
    runner: tuple[ExitRunner, list[int]],
) -> None:
    r, starters = runner
    me = threading.get_ident()
    threads = []
    for i in range(5):  # back to back, as close() or a cascade unloads module after module
        t = r.run(lambda: None, f"m{i}", 5.0)
        assert t is not None
        threads.append(t)
        r.resume()
    assert starters.count(me) == 1, starters  # only the first: then each took a successor
    assert len(set(map(id, threads))) == 5  # a fresh thread (object) for every exit
    for t in threads:
        t.join(IDLE)
        assert not t.is_alive()


def test_close_lets_a_held_exit_thread_end_at_once(
    runner: tuple[ExitRunner, list[int]],
) -> None:
    r, starters = runner
    t = r.run(lambda: None, "held", 5.0)
    assert t is not None
    r.close()  # no resume came (an unload that raised): the thread must not wait for one
    t.join(IDLE / 4)
    assert not t.is_alive()
    assert starters == [threading.get_ident()]  # closed: no successor
