"""Attributes of installed modules that a module's code replaced while it loaded are put
back at unload (typing_extensions replaces typing's ``_check_generic``); what someone else
put there since, and what the library itself set during the load, stay.

``patchable`` (tests/fixtures) stands for the installed library; the modules are written by
each test.
"""

from __future__ import annotations

import typing
import weakref
from collections.abc import Iterator
from pathlib import Path

import patchable  # conftest puts tests/fixtures on sys.path
import pytest

import livemod
from livemod import _leaks, _patches

ORIGINAL = patchable.check

PATCHER = """
__livemod__ = {{"name": "patcher", "version": "{version}"}}
import patchable
def check(value):
    return "patcher {version}"
patchable.check = check
patchable.added_by_patcher = check
{extra}
"""


@pytest.fixture
def lib() -> Iterator[None]:
    """Put the library back as it was, whatever a failing test left in it."""
    lazy = patchable.lazy_cache
    yield
    patchable.check = ORIGINAL
    patchable.lazy_cache = lazy
    vars(patchable).pop("added_by_patcher", None)
    vars(patchable).pop("set_by_library", None)


def write(tmp_path: Path, version: str = "1.0", extra: str = "") -> str:
    target = tmp_path / "patcher.py"
    target.write_text(PATCHER.format(version=version, extra=extra))
    return str(target)


def test_a_replaced_function_is_put_back_and_an_added_one_removed(
    tmp_path: Path, lib: None
) -> None:
    host = livemod.Host()
    try:
        host.insmod(write(tmp_path))
        assert patchable.check(1) == "patcher 1.0" and hasattr(patchable, "added_by_patcher")
        ref = weakref.ref(patchable.check)
        host.rmmod("patcher")
        assert patchable.check is ORIGINAL
        assert not hasattr(patchable, "added_by_patcher")
        assert host.leaks() == []  # waits for the verdict (its collection)
        assert ref() is None or _leaks.unverifiable() is not None
        scrubbed = [e for e in host.events() if e.kind == "scrubbed"]
        assert "patchable.check put back" in scrubbed[-1].message
    finally:
        host.close()


def test_a_value_someone_set_since_the_load_stays(tmp_path: Path, lib: None) -> None:
    host = livemod.Host()
    try:
        host.insmod(write(tmp_path))

        def theirs(value: object) -> str:
            return "application"

        patchable.check = theirs  # the application replaced the plugin's function
        host.rmmod("patcher")
        assert patchable.check is theirs
    finally:
        host.close()


def test_what_the_library_set_during_the_load_stays(tmp_path: Path, lib: None) -> None:
    # Not the module's object (a cache the library built when asked): never taken back.
    extra = "patchable.set_by_library = len\n"
    host = livemod.Host()
    try:
        host.insmod(write(tmp_path, extra=extra))
        host.rmmod("patcher")
        assert patchable.set_by_library is len
    finally:
        host.close()


def test_a_failed_load_puts_back_what_it_replaced(tmp_path: Path, lib: None) -> None:
    host = livemod.Host()
    try:
        with pytest.raises(livemod.InitError):
            host.insmod(write(tmp_path, extra="raise RuntimeError('half done')\n"))
        assert patchable.check is ORIGINAL and not hasattr(patchable, "added_by_patcher")
    finally:
        host.close()


def test_an_upgrade_then_unload_leaves_the_library_as_it_was(tmp_path: Path, lib: None) -> None:
    """v2 loads beside v1, so it sees v1's function as "the value before": v1's unload
    hands v2 the library's own, and nothing keeps v1 alive."""
    host = livemod.Host()
    try:
        host.insmod(write(tmp_path, "1.0"))
        v1 = weakref.ref(patchable.check)
        host.replace("patcher", write(tmp_path, "2.0"))
        assert patchable.check(1) == "patcher 2.0"
        assert host.leaks() == []  # waits for the verdict (its collection)
        assert v1() is None or _leaks.unverifiable() is not None
        host.rmmod("patcher")
        assert patchable.check is ORIGINAL and host.leaks() == []
    finally:
        host.close()


def test_typing_caches_of_the_modules_functions_are_dropped(tmp_path: Path) -> None:
    """typing._tp_cache (typing_extensions decorates its own functions with it) keeps an
    lru_cache per function in typing's tables."""
    target = tmp_path / "cached.py"
    target.write_text('__livemod__ = {"name": "cached"}\n'
                      "import typing\n"
                      "@typing._tp_cache\n"
                      "def lookup(x):\n"
                      "    return x\n"
                      "lookup(1)\n")
    host = livemod.Host()
    try:
        before = len(typing._cleanups)  # type: ignore[attr-defined]
        host.insmod(str(target))
        assert len(typing._cleanups) == before + 1  # type: ignore[attr-defined]
        host.rmmod("cached")
        assert len(typing._cleanups) == before  # type: ignore[attr-defined]
        assert host.leaks() == []
    finally:
        host.close()


def test_imports_after_the_load_are_not_copied() -> None:
    patches = _patches.Patches()
    patches.settle(lambda obj: False)
    patches.note("patchable", ())  # after the load: nothing is copied, at no cost
    assert patches._copies is None and patches.restore(lambda obj: True) == []
