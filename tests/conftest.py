"""Shared fixtures for the core tests: a host on the fixture modules, a probe, wait_for."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

import livemod

FIXTURES = Path(__file__).parent / "fixtures"
MODULES = FIXTURES / "modules"

# Fixture modules report to lm_probe with a plain import.
if str(FIXTURES) not in sys.path:
    sys.path.insert(0, str(FIXTURES))

import lm_probe  # noqa: E402

T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout: float = 5.0, what: str = "") -> T:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds.

    The only way tests wait for another thread: never a bare sleep to let things settle.
    """
    deadline = time.monotonic() + timeout
    delay = 0.0005
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(delay)
        delay = min(delay * 2, 0.02)


@pytest.fixture(name="wait_for")
def wait_for_fixture() -> Callable[..., Any]:
    return wait_for


@pytest.fixture
def probe() -> Iterator[Any]:
    """The lm_probe module, emptied before and after the test."""
    lm_probe.reset()
    yield lm_probe
    lm_probe.reset()


@pytest.fixture
def modules_dir() -> Path:
    return MODULES


@pytest.fixture
def mod_path() -> Callable[[str], str]:
    """``mod_path("basic")`` -> the path of a fixture module file or package folder."""

    def find(name: str) -> str:
        single = MODULES / f"{name}.py"
        return str(single if single.exists() else MODULES / name)

    return find


@pytest.fixture
def host(probe: Any) -> Iterator[livemod.Host]:
    """A host whose modpath is the fixture modules; closed (everything unloaded) afterwards."""
    h = livemod.Host(modpath=[MODULES], timeout=5.0)
    try:
        yield h
    finally:
        h.close(timeout=2.0)


@pytest.fixture
def no_stray_threads() -> Iterator[None]:
    """Every thread a test (or its modules) started must be gone when the test is done.

    The core test files use it for every test (``pytestmark``); it is set up first and torn
    down last, after ``host`` has closed.
    """
    before = set(threading.enumerate())
    yield
    lm_probe.reset()  # opens every gate, so a fixture thread never stays blocked
    wait_for(
        lambda: not (set(threading.enumerate()) - before),
        timeout=5.0,
        what="threads started by the test to finish",
    )
