"""Managed wrappers for process-global registries (_globals): each registration is visible
while the module is loaded, undone exactly at unload and after a failed init, and a *slot*
someone replaced after the module is left alone with a warning.

The module under test is one small file written per test: its ``init`` calls a registration
the test hands it through ``lm_probe.kept["register"]`` (so the test owns, and can identify,
every object registered), then fails if asked. Every global a test touches is restored in a
``finally``. Signal handlers are installed from the test thread, which is the main thread.
"""

from __future__ import annotations

import asyncio
import atexit
import codecs
import copyreg
import importlib.machinery
import logging
import signal
import sys
import textwrap
import threading
import types
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import livemod

pytestmark = pytest.mark.usefixtures("no_stray_threads")

Probe = Any

GLOBMOD = '''
    """Registers through the test's callable, records what the test sees, fails if asked."""
    __livemod__ = {"name": "globmod", "params": {"fail": {"type": "bool", "default": False}}}

    import lm_probe


    def init(mod):
        lm_probe.kept["register"](mod)
        lm_probe.record("registered", lm_probe.kept["registered"]())
        if mod.params.fail:
            raise RuntimeError("init fails after registering")
'''

ASYNC_GLOBMOD = GLOBMOD.replace("def init(mod):", "async def init(mod):")


@pytest.fixture
def globmod(tmp_path: Path) -> str:
    path = tmp_path / "globmod.py"
    path.write_text(textwrap.dedent(GLOBMOD))
    return str(path)


@dataclass
class Case:
    """One wrapper: how to register through it, and how to see the registration."""

    register: Callable[[livemod.ModuleContext], object]
    registered: Callable[[], bool]
    #: True when what was there before the module is there again, exactly.
    intact: Callable[[], bool]
    cleanup: list[Callable[[], object]] = field(default_factory=list)


class _Counter:
    """Compared with every registered atexit callback by ``atexit.unregister``: it notes
    each one and answers False, so nothing is removed."""

    def __init__(self) -> None:
        self.seen: list[object] = []

    def __eq__(self, other: object) -> bool:
        self.seen.append(other)
        return False

    __hash__ = object.__hash__


def atexit_registrations(target: object) -> int:
    """How many times ``target`` is registered with atexit (which has no query API, and
    whose ``_ncallbacks`` does not shrink on unregister). Callbacks whose own ``__eq__``
    declines (functions, plain objects) are compared with the counter instead."""
    counter = _Counter()
    atexit.unregister(counter)
    return sum(1 for seen in counter.seen if seen is target)


class AtexitSpy:
    """A callable to register with atexit; counted with ``atexit_registrations``."""

    def __call__(self) -> None:
        pass

    def registrations(self) -> int:
        return atexit_registrations(self)


def case_atexit() -> Case:
    fn, other = AtexitSpy(), AtexitSpy()
    atexit.register(other)  # someone else's entry: must survive the module's undo
    made: list[object] = []  # what mod.atexit registered on the module's behalf
    return Case(
        register=lambda mod: made.append(mod.atexit(fn)),
        registered=lambda: bool(made) and atexit_registrations(made[-1]) == 1,
        intact=lambda: all(atexit_registrations(m) == 0 for m in made)
        and other.registrations() == 1,
        cleanup=[lambda: atexit.unregister(other),
                 lambda: [atexit.unregister(m) for m in made]],
    )


def case_signal() -> Case:
    signum = signal.SIGUSR1
    original = signal.getsignal(signum)

    def before(s: int, f: Any) -> None:
        pass

    def handler(s: int, f: Any) -> None:
        pass

    signal.signal(signum, before)
    return Case(
        register=lambda mod: mod.signal(signum, handler),
        registered=lambda: signal.getsignal(signum) is handler,
        intact=lambda: signal.getsignal(signum) is before,
        cleanup=[lambda: signal.signal(signum, original)],
    )


class Recording(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []
        self.closed = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def close(self) -> None:
        self.closed += 1
        super().close()


def case_log_handler() -> Case:
    logger = logging.getLogger("lmtest.globals")
    other, handler = Recording(), Recording()
    logger.addHandler(other)
    return Case(
        register=lambda mod: mod.log_handler(handler, "lmtest.globals"),
        registered=lambda: handler in logger.handlers,
        intact=lambda: logger.handlers == [other] and handler.closed == 1 and not other.closed,
        cleanup=[lambda: logger.removeHandler(other), lambda: logger.removeHandler(handler)],
    )


def case_log_handler_root() -> Case:
    root = logging.getLogger()
    handler = Recording()
    before = list(root.handlers)
    return Case(
        register=lambda mod: mod.log_handler(handler),  # None: the root logger
        registered=lambda: root.handlers == [*before, handler],
        intact=lambda: root.handlers == before and handler.closed == 1,
        cleanup=[lambda: root.removeHandler(handler)],
    )


def case_log_filter() -> Case:
    logger = logging.getLogger("lmtest.globals")

    def other(record: logging.LogRecord) -> bool:
        return True

    def fn(record: logging.LogRecord) -> bool:
        return False

    logger.addFilter(other)
    return Case(
        register=lambda mod: mod.log_filter(fn, logger),
        registered=lambda: logger.filters == [other, fn],
        intact=lambda: logger.filters == [other],
        cleanup=[lambda: logger.removeFilter(other), lambda: logger.removeFilter(fn)],
    )


def case_log_filter_on_handler() -> Case:
    handler = Recording()
    flt = logging.Filter("only.this")
    return Case(
        register=lambda mod: mod.log_filter(flt, handler),
        registered=lambda: handler.filters == [flt],
        intact=lambda: handler.filters == [],
    )


def case_excepthook() -> Case:
    original = sys.excepthook

    def before(*a: Any) -> None:
        pass

    def hook(*a: Any) -> None:
        pass

    sys.excepthook = before
    return Case(
        register=lambda mod: mod.excepthook(hook),
        registered=lambda: sys.excepthook is hook,
        intact=lambda: sys.excepthook is before,
        cleanup=[lambda: setattr(sys, "excepthook", original)],
    )


def case_threading_excepthook() -> Case:
    original = threading.excepthook

    def before(args: Any) -> None:
        pass

    def hook(args: Any) -> None:
        pass

    threading.excepthook = before
    return Case(
        register=lambda mod: mod.threading_excepthook(hook),
        registered=lambda: threading.excepthook is hook,
        intact=lambda: threading.excepthook is before,
        cleanup=[lambda: setattr(threading, "excepthook", original)],
    )


def case_patch() -> Case:
    target = types.SimpleNamespace(value="original")
    return Case(
        register=lambda mod: mod.patch(target, "value", "patched"),
        registered=lambda: target.value == "patched",
        intact=lambda: vars(target) == {"value": "original"},
    )


def case_patch_missing_attribute() -> Case:
    target = types.SimpleNamespace()
    return Case(
        register=lambda mod: mod.patch(target, "added", 1),
        registered=lambda: vars(target) == {"added": 1},
        intact=lambda: vars(target) == {},  # deleted again, not set to None
    )


def case_warnings_filter() -> Case:
    before = list(warnings.filters)

    def ours(entry: Any) -> bool:
        return entry[1] is not None and entry[1].pattern == "lmtest-globals"

    return Case(
        register=lambda mod: mod.warnings_filter("ignore", message="lmtest-globals"),
        registered=lambda: sum(map(ours, warnings.filters)) == 1 and ours(warnings.filters[0]),
        intact=lambda: warnings.filters == before,
    )


class NullFinder:
    def find_spec(self, *args: Any) -> None:
        return None


def case_meta_path() -> Case:
    finder = NullFinder()
    before = list(sys.meta_path)
    return Case(
        register=lambda mod: mod.meta_path(finder, index=1),
        registered=lambda: sys.meta_path[1] is finder and len(sys.meta_path) == len(before) + 1,
        intact=lambda: sys.meta_path == before,
        cleanup=[lambda: finder in sys.meta_path and sys.meta_path.remove(finder)],
    )


def case_path_hook() -> Case:
    entry = "lmtest-path:somewhere"

    def hook(path: str) -> NullFinder:
        if not path.startswith("lmtest-path:"):
            raise ImportError("not ours")
        return NullFinder()

    before = list(sys.path_hooks)

    def register(mod: livemod.ModuleContext) -> None:
        mod.path_hook(hook)
        # Using it makes a finder, cached in sys.path_importer_cache under the entry.
        importlib.machinery.PathFinder.find_spec("lmtest_nothing", [entry])

    def cleanup() -> None:
        if hook in sys.path_hooks:
            sys.path_hooks.remove(hook)
        sys.path_importer_cache.pop(entry, None)

    return Case(
        register=register,
        registered=lambda: (
            sys.path_hooks[0] is hook
            and isinstance(sys.path_importer_cache.get(entry), NullFinder)
        ),
        intact=lambda: sys.path_hooks == before and entry not in sys.path_importer_cache,
        cleanup=[cleanup],
    )


class Thing:
    pass


def case_copyreg() -> Case:
    def before(obj: Thing) -> Any:
        return (Thing, ())

    def reducer(obj: Thing) -> Any:
        return (Thing, ())

    copyreg.pickle(Thing, before)
    return Case(
        register=lambda mod: mod.copyreg(Thing, reducer),
        registered=lambda: copyreg.dispatch_table.get(Thing) is reducer,
        intact=lambda: copyreg.dispatch_table.get(Thing) is before,
        cleanup=[lambda: copyreg.dispatch_table.pop(Thing, None)],
    )


def case_codec() -> Case:
    info = codecs.CodecInfo(
        encode=lambda s, errors="strict": (s.encode(), len(s)),
        decode=lambda b, errors="strict": (bytes(b).decode(), len(b)),
        name="lmtestcodec",
    )

    def search(name: str) -> codecs.CodecInfo | None:
        return info if name == "lmtestcodec" else None

    def found() -> bool:
        try:
            return codecs.lookup("lmtestcodec") is info
        except LookupError:
            return False

    return Case(
        register=lambda mod: mod.codec(search),
        registered=found,
        intact=lambda: not found(),  # unregistered, and the lookup cache cleared
        cleanup=[lambda: codecs.unregister(search)],
    )


CASES: dict[str, Callable[[], Case]] = {
    "atexit": case_atexit,
    "signal": case_signal,
    "log_handler": case_log_handler,
    "log_handler_root": case_log_handler_root,
    "log_filter": case_log_filter,
    "log_filter_on_handler": case_log_filter_on_handler,
    "excepthook": case_excepthook,
    "threading_excepthook": case_threading_excepthook,
    "patch": case_patch,
    "patch_missing_attribute": case_patch_missing_attribute,
    "warnings_filter": case_warnings_filter,
    "meta_path": case_meta_path,
    "path_hook": case_path_hook,
    "copyreg": case_copyreg,
    "codec": case_codec,
}


@pytest.fixture
def make_case(probe: Probe) -> Iterator[Callable[[str], Case]]:
    made: list[Case] = []

    def make(name: str) -> Case:
        case = CASES[name]()
        made.append(case)
        probe.kept["register"] = case.register
        probe.kept["registered"] = case.registered
        return case

    try:
        yield make
    finally:
        for case in made:
            for undo in case.cleanup:
                undo()


@pytest.mark.parametrize("name", list(CASES))
def test_registered_while_loaded_and_undone_exactly_at_unload(
    host: livemod.Host, globmod: str, probe: Probe, make_case: Callable[[str], Case], name: str
) -> None:
    case = make_case(name)
    assert not case.registered()
    host.insmod(globmod)
    assert probe.seen("registered") == [("registered", True)]
    assert case.registered()
    host.rmmod("globmod")
    assert not case.registered()
    assert case.intact()
    assert host.tainted == ()
    assert host.leaks() == []


@pytest.mark.parametrize("name", list(CASES))
def test_undone_exactly_after_a_failed_init(
    host: livemod.Host, globmod: str, probe: Probe, make_case: Callable[[str], Case], name: str
) -> None:
    case = make_case(name)
    with pytest.raises(livemod.InitError, match="init fails after registering"):
        host.insmod(globmod, fail=True)
    assert probe.seen("registered") == [("registered", True)]  # it was there during init
    assert not case.registered()
    assert case.intact()
    assert host.lsmod() == []


# ------------------------------------------------------- slots replaced after the module

@dataclass
class Slot:
    register: Callable[[livemod.ModuleContext], object]
    get: Callable[[], object]
    put: Callable[[object], object]
    warning: str


def _signal_slot() -> Slot:
    signum = signal.SIGUSR1
    return Slot(
        register=lambda mod: mod.signal(signum, lambda s, f: None),
        get=lambda: signal.getsignal(signum),
        put=lambda v: signal.signal(signum, v),  # type: ignore[arg-type]
        warning=f"signal {int(signum)} handler was replaced after it; left as is",
    )


def _attr_slot(target: Any, name: str, register: Callable[[Any], object]) -> Slot:
    return Slot(
        register=register,
        get=lambda: getattr(target, name),
        put=lambda v: setattr(target, name, v),
        warning=f"{name} was replaced after it; left as is",
    )


PATCHED = types.SimpleNamespace(value="original")

SLOTS: dict[str, Callable[[], Slot]] = {
    "signal": _signal_slot,
    "excepthook": lambda: _attr_slot(sys, "excepthook", lambda m: m.excepthook(print)),
    "threading_excepthook": lambda: _attr_slot(
        threading, "excepthook", lambda m: m.threading_excepthook(print)
    ),
    "patch": lambda: _attr_slot(PATCHED, "value", lambda m: m.patch(PATCHED, "value", "ours")),
}


@pytest.mark.parametrize("name", list(SLOTS))
def test_a_slot_replaced_after_the_module_is_left_alone_with_a_warning(
    host: livemod.Host,
    globmod: str,
    probe: Probe,
    caplog: pytest.LogCaptureFixture,
    name: str,
) -> None:
    slot = SLOTS[name]()
    original = slot.get()
    try:
        probe.kept["register"] = slot.register
        probe.kept["registered"] = lambda: slot.get() is not original
        host.insmod(globmod)
        assert slot.get() is not original

        def theirs(*args: Any) -> None:
            pass

        slot.put(theirs)  # someone else takes the slot after the module
        with caplog.at_level(logging.WARNING, logger="livemod"):
            host.rmmod("globmod")
        assert slot.get() is theirs, "restoring would clobber whoever replaced it"
        warned = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert [r.getMessage() for r in warned] == [f"module 'globmod': {slot.warning}"]
    finally:
        slot.put(original)


# ----------------------------------------------------------------------- ordering

def test_undo_runs_in_reverse_order_across_wrappers(
    host: livemod.Host, globmod: str, probe: Probe
) -> None:
    target = types.SimpleNamespace(value=0)
    seen: list[object] = []

    def register(mod: livemod.ModuleContext) -> None:
        # Each patch sees the previous one as "the value before": only a reverse-order
        # undo gets back to 0 without a "replaced after it" warning.
        for value in (1, 2, 3):
            mod.patch(target, "value", value)
        mod.on_exit(lambda: seen.append(("on_exit", target.value)))

    probe.kept.update(register=register, registered=lambda: target.value == 3)
    host.insmod(globmod)
    host.rmmod("globmod")
    assert seen == [("on_exit", 3)]
    assert target.value == 0


def test_atexit_undo_removes_only_the_modules_registration(
    host: livemod.Host, globmod: str, probe: Probe
) -> None:
    shared = AtexitSpy()
    atexit.register(shared)  # the application's own registration
    made: list[object] = []
    try:
        probe.kept.update(register=lambda mod: made.append(mod.atexit(shared)),
                          registered=lambda: atexit_registrations(made[-1]) == 1)
        host.insmod(globmod)
        assert atexit_registrations(made[-1]) == 1 and shared.registrations() == 1
        host.rmmod("globmod")
        assert atexit_registrations(made[-1]) == 0
        assert shared.registrations() == 1, "the application's registration was removed"
    finally:
        atexit.unregister(shared)


def test_warnings_filter_undo_keeps_an_equal_filter_the_application_had(
    host: livemod.Host, globmod: str, probe: Probe
) -> None:
    warnings.filterwarnings("ignore", message="lmtest-shared")

    def count() -> int:
        return sum(1 for f in warnings.filters if f[1] is not None
                   and f[1].pattern == "lmtest-shared")

    probe.kept.update(
        register=lambda mod: mod.warnings_filter("ignore", message="lmtest-shared"),
        registered=lambda: count() == 1,
    )
    host.insmod(globmod)
    host.rmmod("globmod")
    assert count() == 1, "the application's own filter is gone"


# ------------------------------------------------------------------ threads and loops

def test_signal_from_a_thread_that_is_not_main_fails_the_load_cleanly(
    host: livemod.Host, globmod: str, probe: Probe
) -> None:
    target = types.SimpleNamespace(value="original")

    def register(mod: livemod.ModuleContext) -> None:
        mod.patch(target, "value", "patched")
        mod.signal(signal.SIGUSR1, lambda s, f: None)

    probe.kept.update(register=register, registered=lambda: True)
    original = signal.getsignal(signal.SIGUSR1)
    errors: list[BaseException] = []

    def load() -> None:
        try:
            host.insmod(globmod)
        except BaseException as exc:
            errors.append(exc)

    worker = threading.Thread(target=load, name="not-main")
    worker.start()
    worker.join(10)
    [err] = errors
    assert isinstance(err, livemod.InitError)
    assert isinstance(err.__cause__, ValueError)
    assert "main thread" in str(err.__cause__)
    assert target.value == "original"  # what init did before the failure was undone
    assert signal.getsignal(signal.SIGUSR1) is original


def test_signal_set_by_an_async_init_is_restored_by_armmod(
    tmp_path: Path, probe: Probe
) -> None:
    path = tmp_path / "globmod.py"
    path.write_text(textwrap.dedent(ASYNC_GLOBMOD))
    signum = signal.SIGUSR1
    original = signal.getsignal(signum)

    def before(s: int, f: Any) -> None:
        pass

    async def main() -> None:
        async with livemod.Host(timeout=5.0) as host:
            await host.ainsmod(str(path))  # async init: runs on the loop, the main thread
            assert signal.getsignal(signum) is not before
            await host.armmod("globmod")
            failed = [e.message for e in host.events() if e.kind == "cleanup-failed"]
            assert failed == []
            assert signal.getsignal(signum) is before

    signal.signal(signum, before)
    try:
        probe.kept.update(register=lambda mod: mod.signal(signum, lambda s, f: None),
                          registered=lambda: True)
        asyncio.run(main())
    finally:
        signal.signal(signum, original)
