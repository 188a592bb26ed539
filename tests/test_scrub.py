"""The scrub at unload: what a module's code left in CPython's own registries is taken back,
by identity, without running any of its code; what others put there stays.

The fixture module ``scrub_registries`` registers in every registry the way real packages
do; ``renderlib`` (tests/fixtures) stands for an installed library with a singledispatch
function plugins register on.
"""

from __future__ import annotations

import codecs
import copyreg
import gc
import logging
import sys
import threading
import types
import typing
import warnings
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import livemod
from livemod import _leaks

MODULES = Path(__file__).parent / "fixtures" / "modules"

import lm_app  # noqa: E402  (conftest puts tests/fixtures on sys.path)
import renderlib  # noqa: E402


def path(name: str) -> str:
    return str(MODULES / f"{name}.py")


@pytest.fixture
def slots() -> Iterator[None]:
    """Put back every process slot a failed test could leave the module's value in."""
    saved = (sys.excepthook, threading.excepthook, sys.unraisablehook, list(warnings.filters),
             list(sys.meta_path), list(gc.callbacks))
    yield
    sys.excepthook, threading.excepthook, sys.unraisablehook = saved[:3]
    warnings.filters[:] = saved[3]
    sys.meta_path[:] = saved[4]
    gc.callbacks[:] = saved[5]
    lm_app.reset()


def logger_dict_has(prefix: str) -> bool:
    return any(n.startswith(prefix) for n in logging.Logger.manager.loggerDict)


def test_every_registry_is_scrubbed_and_nothing_leaks(host: livemod.Host, slots: None) -> None:
    hooks = (sys.excepthook, threading.excepthook, sys.unraisablehook)  # pytest's, maybe
    m = host.insmod(path("scrub_registries"))
    inst = host._table.names["scrub_registries"]
    private = inst.private_name
    module = sys.modules[private]
    thing = module.Thing
    # What the module did is visible while it is loaded.
    assert any(f[2] is module.LibWarning for f in warnings.filters)
    assert codecs.lookup("scrubcodec").name == "utf-8"
    assert sys.excepthook is module.excepthook
    assert copyreg.dispatch_table[thing] is module.reduce_thing
    assert renderlib.render_value(thing()) == "a thing"
    assert renderlib.Formatter().format(thing()) == "a formatted thing"
    assert sys.modules["scrub_registries_alias"] is module
    assert logger_dict_has(private)
    app_logger = logging.getLogger("app.scrub")
    assert len(app_logger.handlers) == 2 and len(app_logger.filters) == 1
    assert "x".encode("ascii", "scrub-replace") == b"x"
    assert "é".encode("ascii", "scrub-replace") == b"?"
    ref = weakref.ref(thing)
    del module, thing
    host.rmmod("scrub_registries")

    # Gone from every registry...
    assert not any(type(f[2]).__name__ == "type" and f[2].__name__ == "LibWarning"
                   for f in warnings.filters)
    assert not any(f[1] is not None and f[1].pattern == "scrub-me" for f in warnings.filters)
    with pytest.raises(LookupError):
        codecs.lookup("scrubcodec")
    assert (sys.excepthook, threading.excepthook, sys.unraisablehook) == hooks
    assert "scrub_registries_alias" not in sys.modules
    assert not logger_dict_has(private)
    assert app_logger.handlers == [] and app_logger.filters == []
    assert renderlib.render_value(1) == "1"
    # The error handler falls back to strict once its module is gone.
    with pytest.raises(UnicodeEncodeError):
        "é".encode("ascii", "scrub-replace")
    # ...and so the module is really gone: no leak, no taint (where the interpreter lets
    # unloaded code die at all: not on 3.13t, see _leaks).
    gc.collect()
    assert ref() is None or _leaks.unverifiable() is not None, host.leaks()
    assert host.leaks() == []
    assert not [t for t in host.tainted if t.flag == "module-leaked"]
    scrubbed = [e for e in host.events() if e.kind == "scrubbed"]
    assert scrubbed and "singledispatch registration" in scrubbed[-1].message
    assert m.state is livemod.State.GONE


def test_what_others_registered_stays(host: livemod.Host, slots: None) -> None:
    """Entries of the application, made before and after the module, are not touched."""

    def app_hook(*args: Any) -> None:
        pass

    sys.excepthook = app_hook
    warnings.filterwarnings("ignore", message="app-filter")
    mine = warnings.filters[0]
    handler = logging.NullHandler()
    logging.getLogger("app.scrub").addHandler(handler)
    try:
        host.insmod(path("scrub_registries"))
        host.rmmod("scrub_registries")
        assert sys.excepthook is app_hook  # the value before the load comes back
        assert any(f is mine for f in warnings.filters)
        assert logging.getLogger("app.scrub").handlers == [handler]
        assert renderlib.render_value.dispatch(object) is not None
    finally:
        logging.getLogger("app.scrub").removeHandler(handler)


def test_a_slot_replaced_since_is_left_alone(host: livemod.Host, slots: None) -> None:
    host.insmod(path("scrub_registries"))

    def later(*args: Any) -> None:
        pass

    sys.excepthook = later  # someone else replaced the module's hook
    host.rmmod("scrub_registries")
    assert sys.excepthook is later


ATEXIT_SCRIPT = """
import sys, livemod
mod = sys.argv[1]
with open(mod, "w") as f:
    f.write("__livemod__ = {'name': 'bye'}\\n"
            "import atexit, os\\n"
            "def bye():\\n"
            "    os.write(1, b'BYE RAN\\\\n')\\n"
            "atexit.register(bye)\\n"
            "from atexit import register\\n"
            "register(print, 'PRINT RAN')\\n")
host = livemod.Host()
host.insmod(mod)
if sys.argv[2] == "unload":
    host.rmmod("bye")
    print("leaks:", host.leaks())
"""


@pytest.mark.parametrize("unload", [True, False])
def test_atexit_registration_is_undone(tmp_path: Path, unload: bool) -> None:
    import subprocess

    out = subprocess.run(
        [sys.executable, "-c", ATEXIT_SCRIPT, str(tmp_path / "bye.py"),
         "unload" if unload else "keep"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout
    if unload:
        assert "BYE RAN" not in out and "PRINT RAN" not in out, out
        assert "leaks: []" in out
    else:  # the registration works as the module meant while it is loaded
        assert "BYE RAN" in out and "PRINT RAN" in out, out


def test_typing_overloads_are_dropped(host: livemod.Host, slots: None) -> None:
    host.insmod(path("scrub_registries"))
    private = host._table.names["scrub_registries"].private_name
    assert private in typing._overload_registry  # type: ignore[attr-defined]
    host.rmmod("scrub_registries")
    assert private not in typing._overload_registry  # type: ignore[attr-defined]


def test_load_and_unload_ten_times_leaves_registries_as_they_were(
    host: livemod.Host, slots: None
) -> None:
    host.insmod(path("scrub_registries"))  # the public logger 'app.scrub' comes to be
    host.rmmod("scrub_registries")
    sizes = (len(warnings.filters), len(sys.meta_path), len(gc.callbacks),
             len(copyreg.dispatch_table), len(logging.Logger.manager.loggerDict))
    for _ in range(10):
        host.insmod(path("scrub_registries"))
        host.rmmod("scrub_registries")
    assert (len(warnings.filters), len(sys.meta_path), len(gc.callbacks),
            len(copyreg.dispatch_table), len(logging.Logger.manager.loggerDict)) == sizes
    assert host.leaks() == []


def test_a_failed_load_is_scrubbed_too(tmp_path: Path, host: livemod.Host, slots: None) -> None:
    src = tmp_path / "halfway.py"
    src.write_text(
        '__livemod__ = {"name": "halfway"}\n'
        "import sys, warnings\n"
        "class W(UserWarning): pass\n"
        "warnings.simplefilter('always', W)\n"
        "def hook(*a): pass\n"
        "sys.excepthook = hook\n"
        "raise RuntimeError('body fails half way')\n"
    )
    filters = len(warnings.filters)
    with pytest.raises(livemod.InitError):
        host.insmod(src)
    assert len(warnings.filters) == filters
    assert sys.excepthook is sys.__excepthook__


def test_a_host_scrubber_takes_back_a_third_party_registry(
    host: livemod.Host, tmp_path: Path
) -> None:
    registry: dict[str, Any] = {}  # an ORM's model registry, say
    lm_app.registry["orm"] = registry
    seen: list[str] = []

    @host.scrubber
    def orm(scrub: livemod.Scrub) -> None:
        seen.append(scrub.name)
        for key in [k for k, v in registry.items() if scrub.owns(v)]:
            del registry[key]
            scrub.removed(f"model {key!r}")

    src = tmp_path / "models.py"
    src.write_text('__livemod__ = {"name": "models"}\n'
                   "import lm_app\n"
                   "class User: pass\n"
                   "lm_app.registry['orm']['User'] = User\n")
    host.insmod(src)
    registry["Keep"] = int
    host.rmmod("models")
    assert seen == ["models"]
    assert registry == {"Keep": int}
    assert host.leaks() == []
    assert any("model 'User'" in e.message for e in host.events() if e.kind == "scrubbed")


def test_a_failing_scrubber_is_logged_and_the_unload_completes(
    host: livemod.Host, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    later: list[str] = []

    @host.scrubber
    def broken(scrub: livemod.Scrub) -> None:
        raise RuntimeError("scrubber bug")

    @host.scrubber
    def after(scrub: livemod.Scrub) -> None:
        later.append(scrub.name)

    src = tmp_path / "plain.py"
    src.write_text('__livemod__ = {"name": "plain"}\n')
    m = host.insmod(src)
    with caplog.at_level(logging.ERROR, logger="livemod"):
        host.rmmod("plain")
    assert m.state is livemod.State.GONE
    assert later == ["plain"]  # the rest still ran
    assert "scrubber bug" in caplog.text
    assert any("scrub failed" in e.message for e in host.events())


def test_the_scrub_never_runs_module_code(host: livemod.Host, slots: None) -> None:
    """Objects with hostile __eq__/__hash__/__class__/__getattr__ in every registry."""
    host.insmod(path("scrub_hostile"))
    host.rmmod("scrub_hostile")
    assert lm_app.lazy_runs == []
    assert host.leaks() == []


def test_the_load_baseline_is_shared_until_a_slot_a_path_entry_or_a_builtin_changes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from livemod import _scrub

    first = _scrub.baseline()
    assert _scrub.baseline() is first  # nothing changed: not even a new dict
    changes = [
        lambda: monkeypatch.setattr(sys, "excepthook", lambda *a: None),
        lambda: monkeypatch.setattr(sys, "path", [*sys.path, "/nowhere/else"]),
        lambda: monkeypatch.setattr("builtins.lm_baseline_probe", object(), raising=False),
        lambda: monkeypatch.setattr("builtins.len", lambda x, _len=len: _len(x)),  # a value
    ]
    seen = [first]
    for change in changes:
        change()
        now = _scrub.baseline()
        assert all(now is not old for old in seen), change
        assert _scrub.baseline() is now
        seen.append(now)
    assert seen[1]["sys.excepthook"] is sys.excepthook
    assert "/nowhere/else" in seen[2]["sys.path"]
    assert seen[4]["builtins"]["len"] == id(sys.modules["builtins"].len)


def test_a_warning_category_leaves_the_registry_of_the_module_that_warned(
    host: livemod.Host, tmp_path: Path
) -> None:
    # warnings keeps, in the globals of the module a warning is attributed to, a registry
    # keyed by (text, category, line): an installed module that warned with the module's
    # category keeps it alive there until the scrub takes the key out.
    helper = types.ModuleType("lm_warn_helper")
    exec("import warnings\ndef warn(cat):\n    warnings.warn('from the helper', cat)\n",
         helper.__dict__)
    sys.modules["lm_warn_helper"] = helper
    (tmp_path / "cat9.py").write_text(
        '__livemod__ = {"name": "cat9"}\nimport lm_warn_helper\n\n'
        "class Cat9Warning(UserWarning):\n    pass\n\n"
        "def init(mod):\n    lm_warn_helper.warn(Cat9Warning)\n")

    def keyed_by_cat9() -> list[Any]:
        return [k for k in helper.__dict__.get("__warningregistry__", {})
                if type(k) is tuple and any(getattr(p, "__name__", "") == "Cat9Warning"
                                            for p in k)]

    try:
        with warnings.catch_warnings(record=True) as shown:
            warnings.simplefilter("default")
            host.insmod(tmp_path / "cat9.py")
            assert [str(w.message) for w in shown] == ["from the helper"]
            assert len(keyed_by_cat9()) == 1
            host.rmmod("cat9")
            assert keyed_by_cat9() == []
    finally:
        sys.modules.pop("lm_warn_helper", None)
