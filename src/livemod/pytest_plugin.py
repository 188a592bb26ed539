"""livemod's pytest plugin (entry point ``pytest11``, name ``livemod``): loaded by pytest
whenever livemod is installed; ``-p no:livemod`` turns it off.

Fixtures:

``livemod_modpath``
    A fresh, empty folder (a ``pathlib.Path``) that is the modpath of ``livemod_host``:
    write module files into it and ``modprobe`` them by name.
``livemod_host``
    A :class:`livemod.Host` on that modpath. At teardown it is closed (every module
    unloaded, dependents first) and the test fails if any module's code survived its
    unload (``host.leaks()``), naming the module and who holds it.

``livemod.testing.check_module`` is the one-call form of the same checks for one module.
"""

from __future__ import annotations

import pathlib
from collections.abc import Iterator

import pytest

from . import Host

__all__ = ["livemod_host", "livemod_modpath"]


@pytest.fixture
def livemod_modpath(tmp_path: pathlib.Path) -> pathlib.Path:
    """An empty folder, the modpath of ``livemod_host``."""
    folder = tmp_path / "livemod-modules"
    folder.mkdir()
    return folder


@pytest.fixture
def livemod_host(livemod_modpath: pathlib.Path,
                 request: pytest.FixtureRequest) -> Iterator[Host]:
    """A host on ``livemod_modpath``; closed at teardown, failing the test on a leak."""
    host = Host([livemod_modpath], name=f"pytest-{request.node.name}"[:80])
    try:
        yield host
    finally:
        host.close()
    leaks = host.leaks()
    if leaks:
        pytest.fail("livemod_host: module code survived its unload:\n"
                    + "\n".join(str(leak) for leak in leaks), pytrace=False)
