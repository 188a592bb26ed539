"""The journal: the one writer of a module's state, checked against a table of legal moves."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import livemod
from livemod import State
from livemod._instance import Instance
from livemod._journal import MOVES, IllegalTransition, Journal
from livemod._manifest import read_manifest
from livemod._params import Params

pytestmark = pytest.mark.usefixtures("no_stray_threads")


def test_an_illegal_move_raises_and_changes_nothing(mod_path: Callable[[str], str]) -> None:
    info = read_manifest(mod_path("basic"))
    inst = Instance(info, Params(info.params, {}, module=info.name))
    journal = Journal(threading.Lock())
    seen: list[Any] = []
    journal.subscribe(lambda *a: seen.append(a))
    for wrong in (State.LIVE, State.GOING, State.LOADING):
        with pytest.raises(IllegalTransition, match=f"LOADING to {wrong.name}"):
            journal.transition(inst, wrong)
        assert inst.state is State.LOADING
    assert seen == []
    journal.transition(inst, State.COMING)
    assert inst.state is State.COMING
    assert seen == [("basic", State.LOADING, State.COMING)]


def test_every_move_a_host_makes_is_a_legal_one(
    host: livemod.Host, mod_path: Callable[[str], str], tmp_path: Path
) -> None:
    moves: list[tuple[State | None, State]] = []
    host.subscribe(lambda name, old, new: moves.append((old, new)))
    host.insmod(mod_path("basic"))
    with pytest.raises(livemod.InitError):
        host.insmod(mod_path("failinit"), step=2)
    with host.hold("basic"), pytest.raises(livemod.ModuleBusy):
        host.rmmod("basic", wait=True, timeout=0.05)  # GOING -> LIVE again
    host.replace("basic")
    host.rmmod("basic")
    assert moves, "the subscriber saw nothing"
    for move in moves:
        assert move == (None, State.LOADING) or move in MOVES, move
    assert (State.GOING, State.LIVE) in moves
    assert (State.COMING, State.GONE) in moves
    assert (State.GOING, State.GONE) in moves
