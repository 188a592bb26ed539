"""Registries seen clean (``livemod._scrub_seen``): a scrub that finds the very objects an
earlier look found clean skips its pass; that must never hide an entry, and the kept view
must never keep anything alive."""

from __future__ import annotations

import copyreg
import gc
import logging
import sys
import textwrap
import warnings
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest

import livemod
from livemod import _leaks, _scrub_seen

MODULES = Path(__file__).parent / "fixtures" / "modules"
LABELS = {"warnings", "copyreg", "import system", "logging"}


@pytest.fixture
def registries() -> Iterator[None]:
    saved = list(warnings.filters), list(sys.meta_path), dict(copyreg.dispatch_table)
    yield
    warnings.filters[:] = saved[0]
    sys.meta_path[:] = saved[1]
    copyreg.dispatch_table.clear()
    copyreg.dispatch_table.update(saved[2])


def write(tmp_path: Path, name: str, body: str) -> Path:
    target = tmp_path / f"{name}.py"
    target.write_text(f'__livemod__ = {{"name": "{name}"}}\n' + textwrap.dedent(body))
    return target


def test_a_registry_seen_clean_still_gives_up_a_later_modules_entries(
    host: livemod.Host, tmp_path: Path, registries: None
) -> None:
    host.insmod(write(tmp_path, "plain_seen", "X = 1\n"))
    host.rmmod("plain_seen")
    assert set(_scrub_seen._kept) >= LABELS  # the skip is what the unload below meets
    host.insmod(MODULES / "scrub_registries.py")
    module = sys.modules[host._table.names["scrub_registries"].private_name]
    category, thing = module.LibWarning, module.Thing
    finders = [f for f in sys.meta_path if type(f).__name__ == "Importer"]
    assert finders and copyreg.dispatch_table[thing] is module.reduce_thing
    del module
    host.rmmod("scrub_registries")
    assert not any(f[2] is category for f in warnings.filters)
    assert thing not in copyreg.dispatch_table
    assert not any(any(f is g for g in sys.meta_path) for f in finders)
    assert logging.getLogger("app.scrub").handlers == []
    ref = weakref.ref(thing)
    del category, thing, finders
    gc.collect()
    assert ref() is None or _leaks.unverifiable() is not None, host.leaks()


def test_a_view_holding_a_loaded_modules_entry_is_never_taken_for_clean(
    host: livemod.Host, tmp_path: Path, registries: None
) -> None:
    # holder_seen's filter is in the registry while other_seen unloads: other_seen's look
    # finds nothing of its own there, but the view must not be kept as clean (the owner
    # of every loaded module says so), or holder_seen's own unload would skip its filter.
    host.insmod(write(tmp_path, "holder_seen", """
        import warnings
        class HolderWarning(UserWarning):
            pass
        warnings.simplefilter("always", HolderWarning, append=True)
        """))
    category = sys.modules[host._table.names["holder_seen"].private_name].HolderWarning
    host.insmod(write(tmp_path, "other_seen", "X = 1\n"))
    host.rmmod("other_seen")
    assert any(f[2] is category for f in warnings.filters)
    assert not _scrub_seen.seen("warnings", list(warnings.filters))
    host.rmmod("holder_seen")
    assert not any(f[2] is category for f in warnings.filters)


def test_a_clean_view_keeps_no_handler_alive(host: livemod.Host, tmp_path: Path) -> None:
    handler = logging.StreamHandler()
    logging.getLogger("app.seen").addHandler(handler)
    try:
        host.insmod(write(tmp_path, "plain_seen", "X = 1\n"))
        host.rmmod("plain_seen")  # the logging view now includes the handler
        assert "logging" in _scrub_seen._kept
    finally:
        logging.getLogger("app.seen").removeHandler(handler)
    ref = weakref.ref(handler)
    del handler
    gc.collect()
    assert ref() is None
