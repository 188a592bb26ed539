"""Shared fixtures for the core tests: a host on the fixture modules, a probe, wait_for;
and the interpreter-dependent markers (``asserts_leak``, ``race``)."""

from __future__ import annotations

import signal
import sys
import sysconfig
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

import livemod
from livemod import _leaks

FIXTURES = Path(__file__).parent / "fixtures"
MODULES = FIXTURES / "modules"

# Fixture modules report to lm_probe with a plain import.
if str(FIXTURES) not in sys.path:
    sys.path.insert(0, str(FIXTURES))

import lm_probe  # noqa: E402

# A shell runs a background job (`.ci/run &`, nohup) with SIGINT ignored, and an ignored
# signal stays ignored across exec in every child: the CLI tests' Ctrl-C would never reach
# the livemod processes they start. Give this process (and so its children) the default.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

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


def _host_on(folder: Path) -> Iterator[livemod.Host]:
    h = livemod.Host(modpath=[folder], timeout=5.0)
    try:
        yield h
    finally:
        h.close(timeout=2.0)


@pytest.fixture
def host(probe: Any) -> Iterator[livemod.Host]:
    """A host whose modpath is the fixture modules; closed (everything unloaded) afterwards."""
    yield from _host_on(MODULES)


@pytest.fixture
def modpath(tmp_path: Path) -> Path:
    """An empty modpath folder of the test's own, for modules the test writes."""
    root = tmp_path / "mods"
    root.mkdir()
    return root


@pytest.fixture
def wired_host(modpath: Path) -> Iterator[livemod.Host]:
    """A host on ``modpath``; closed afterwards."""
    yield from _host_on(modpath)


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


# ------------------------------------------------------------------ interpreters (3.13t)

#: A free-threaded build (3.13t): the GIL may be off, and the race tests must see it off.
FREE_THREADED: bool = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
#: Why no leak verdict is possible here (free-threaded 3.13), else None.
LEAK_UNVERIFIABLE: str | None = _leaks.unverifiable()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``@pytest.mark.asserts_leak`` tests need a leak verdict: skip them, saying why, where
    the interpreter makes unloaded code immortal. Every other test runs there."""
    if LEAK_UNVERIFIABLE is None:
        return
    skip = pytest.mark.skip(reason=f"the leak check {LEAK_UNVERIFIABLE}")
    for item in items:
        if item.get_closest_marker("asserts_leak") is not None:
            item.add_marker(skip)


def pytest_runtest_setup(item: pytest.Item) -> None:
    """A ``@pytest.mark.race`` test on a free-threaded build runs with the GIL really off
    (``PYTHON_GIL=0``): that is where a hidden reliance on the GIL shows."""
    if FREE_THREADED and item.get_closest_marker("race") is not None:
        is_gil_enabled = getattr(sys, "_is_gil_enabled", lambda: True)
        if is_gil_enabled() is not False:
            pytest.fail("a race test on a free-threaded build needs the GIL off, but "
                        "sys._is_gil_enabled() is True: run with PYTHON_GIL=0 (an extension "
                        "module without free-threading support switched it on)",
                        pytrace=False)


# ------------------------------------------------------------------ etcd (tests/etcd_support.py)


@pytest.fixture
def etcd() -> Iterator[Any]:
    """A real etcd on free loopback ports with its own data folder, stopped at the end."""
    from etcd_support import EtcdServer

    server = EtcdServer()
    yield server
    server.close()


@pytest.fixture
def machines(etcd: Any) -> Iterator[list[Any]]:
    """The ``etcd_support.Machine`` objects a test starts; each is stopped at the end."""
    made: list[Any] = []
    yield made
    for m in made:
        m.stop()
