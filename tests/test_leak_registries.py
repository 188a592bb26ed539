"""The leak report looks into the known registries first and names the holder in words;
it never runs module code and never makes an unload fail."""

from __future__ import annotations

import gc
import logging
import sys
import types
from pathlib import Path

import pytest

import livemod
from livemod import _leak_watch, _leaks

MODULES = Path(__file__).parent / "fixtures" / "modules"

import lm_app  # noqa: E402  (conftest puts tests/fixtures on sys.path)
import renderlib  # noqa: E402


def test_a_singledispatch_registration_is_named() -> None:
    """What the scrub would take back, seen by the report alone (no host, no scrub)."""
    private = "livemod.mods._hreport.renderplug"
    module = types.ModuleType(private)
    exec("class Shape:\n    pass\n", module.__dict__)
    sys.modules[private] = module
    renderlib.render_value.register(module.Shape, lambda v: "shape")
    watch = _leak_watch.watch("renderplug", "1.0", [module])
    del sys.modules[private], module
    try:
        gc.collect()
        assert watch.survivors()
        watch.explain()
        assert any("held by the singledispatch registry of renderlib.render_value" in c
                   for c in watch.chains), watch.chains
    finally:
        from livemod._scrub_registries import registry_of

        found = registry_of(renderlib.render_value)
        assert found is not None
        for cls in [c for c in list(found) if c is not object]:
            del found[cls]
        renderlib.render_value._clear_cache()  # type: ignore[attr-defined]


@pytest.mark.asserts_leak
def test_a_handler_the_application_added_is_named(host: livemod.Host) -> None:
    host.insmod(MODULES / "culprit_stream.py")
    host.rmmod("culprit_stream")
    app = logging.getLogger("app")
    try:
        [leak] = host.leaks()
        assert any("held by logging handler StreamHandler on logger 'app'" in c
                   for c in leak.chains), leak.chains
    finally:
        app.handlers[:] = [h for h in app.handlers if type(h) is not logging.StreamHandler]
    gc.collect()
    assert host.leaks() == []


@pytest.mark.asserts_leak
def test_the_report_on_hostile_objects_runs_no_module_code(
    host: livemod.Host, tmp_path: Path
) -> None:
    """six's lazy attributes, a __class__ property, a hostile metaclass -- held by the
    application, so the watch and the full report (registries, then the walk) run."""
    src = tmp_path / "hostile_leak.py"
    src.write_text(
        (MODULES / "scrub_hostile.py").read_text().replace(
            '"name": "scrub_hostile"', '"name": "hostile_leak"')
        + "\nlm_app.handlers.append(moves)\nlm_app.registry['lazy'] = Moves\n"
    )
    host.insmod(src)
    host.rmmod("hostile_leak")  # completes: the watch never ran a lazy attribute
    [leak] = host.leaks()
    assert lm_app.lazy_runs == [], lm_app.lazy_runs
    assert any("lm_app" in c for c in leak.chains), leak.chains
    lm_app.handlers.clear()
    lm_app.registry.clear()
    gc.collect()
    assert host.leaks() == []


@pytest.mark.asserts_leak
def test_a_failing_report_is_reported_and_the_unload_completes(
    host: livemod.Host, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: object, budget: float) -> None:
        raise RuntimeError("report bug")

    monkeypatch.setattr(_leaks.LeakWatch, "_explain", broken)
    src = tmp_path / "leaker.py"
    src.write_text('__livemod__ = {"name": "leaker"}\nimport lm_app\n'
                   "def cb(): pass\nlm_app.handlers.append(cb)\n")
    m = host.insmod(src)
    host.rmmod("leaker")
    assert m.state is livemod.State.GONE
    [leak] = host.leaks()
    assert "the leak report failed" in leak.chains[0]
    lm_app.handlers.clear()
