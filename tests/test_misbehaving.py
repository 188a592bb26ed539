"""Modules that misbehave: what the host does about each, and that it goes on serving.

Decided (and documented in host.py): any BaseException from a module's body or init is a
failed load (InitError, rolled back) -- except KeyboardInterrupt, which is rolled back and
then propagates, because it is the operator's Ctrl-C. exit() runs in a thread of its own for
at most ``exit_timeout`` seconds; one that raises or hangs taints the host and the unload
completes. Taints are permanent and say when and which module.

The modules are written into a temporary modpath by each test; they report to lm_probe.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import livemod
from helpers import in_thread
from livemod import State

pytestmark = pytest.mark.usefixtures("no_stray_threads")

BASIC = Path(__file__).parent / "fixtures" / "modules" / "basic.py"
LIVEMOD = [sys.executable, "-m", "livemod.cli"]


class Lab:
    """A temporary modpath and a host on it, with ``basic`` loaded as a bystander."""

    def __init__(self, folder: Path, probe: Any, **host_kwargs: Any) -> None:
        self.folder = folder
        self.probe = probe
        host_kwargs.setdefault("timeout", 2.0)
        self.host = livemod.Host(modpath=[folder], **host_kwargs)
        probe.kept["host"] = self.host
        self.host.insmod(BASIC)

    def write(self, name: str, body: str, manifest: str = "") -> Path:
        target = self.folder / f"{name}.py"
        target.write_text(
            f'__livemod__ = {{"name": "{name}"{", " + manifest if manifest else ""}}}\n'
            "import lm_probe\n" + textwrap.dedent(body)
        )
        return target

    def state(self) -> tuple[Any, ...]:
        """lsmod (without timestamps), this host's private names, hook implementations."""
        rows = tuple((r.name, r.version, r.state, r.holds, r.pins, r.used_by, r.uses)
                     for r in self.host.lsmod())
        prefix = f"livemod.mods.{self.host._tag}."
        private = frozenset(n for n in sys.modules if n.startswith(prefix))
        hooks = {n: h.implementations() for n, h in list(self.host._hooks.hooks.items())
                 if len(h)}
        return rows, private, hooks

    def bystander_answers(self) -> None:
        assert self.host.hook("basic.ping")(1) == [("pong", 1)]


@pytest.fixture
def lab_factory(tmp_path: Path, probe: Any) -> Iterator[Callable[..., Lab]]:
    made: list[Lab] = []

    def make(**kwargs: Any) -> Lab:
        folder = tmp_path / f"mods{len(made)}"
        folder.mkdir()
        made.append(Lab(folder, probe, **kwargs))
        return made[-1]

    yield make
    probe.reset()  # open every gate before closing
    for lab in made:
        lab.host.close(timeout=2.0)


@pytest.fixture
def lab(lab_factory: Callable[..., Lab]) -> Lab:
    return lab_factory()




# ----------------------------------------------------------------------------------- init


REGISTERS_THEN = """
def handler(x=None):
    return "misbehaver"

def worker(mod):
    lm_probe.record("m", "thread ran")

def init(mod):
    mod.hook("basic.ping").add(handler)
    mod.hook("m.h").add(handler)
    mod.export("handler", handler)
    mod.thread(worker, mod)
    mod.on_exit(lambda: lm_probe.record("m", "undone"))
    {fail}

def exit(mod):
    lm_probe.record("m", "exit ran")
"""


def test_init_calling_sys_exit_is_a_failed_load(lab: Lab) -> None:
    before = lab.state()
    lab.write("m", REGISTERS_THEN.format(fail="import sys; sys.exit(4)"))
    with pytest.raises(livemod.InitError, match=r"SystemExit: 4") as caught:
        lab.host.modprobe("m")
    assert isinstance(caught.value.__cause__, SystemExit)
    assert lab.state() == before
    assert lab.probe.seen("m") == [("m", "undone")]  # managed undo ran; exit and thread not
    lab.bystander_answers()
    assert lab.host.tainted == ()


def test_init_raising_keyboard_interrupt_propagates_after_a_complete_rollback(lab: Lab) -> None:
    before = lab.state()
    lab.write("m", REGISTERS_THEN.format(fail="raise KeyboardInterrupt"))
    with pytest.raises(KeyboardInterrupt):
        lab.host.modprobe("m")
    assert lab.state() == before
    assert lab.probe.seen("m") == [("m", "undone")]
    assert [e.kind for e in lab.host.events()].count("load") == 1  # basic only
    lab.bystander_answers()
    # The name is free again: a fixed version loads.
    lab.write("m", REGISTERS_THEN.format(fail="pass"))
    lab.host.modprobe("m")
    assert lab.host.hook("m.h")() == ["misbehaver"]


def test_init_raising_a_custom_base_exception_is_a_failed_load(lab: Lab) -> None:
    before = lab.state()
    lab.write("m", "class Meltdown(BaseException):\n    pass\n"
              + REGISTERS_THEN.format(fail="raise Meltdown('core')"))
    with pytest.raises(livemod.InitError, match=r"Meltdown: core") as caught:
        lab.host.modprobe("m")
    assert type(caught.value.__cause__).__name__ == "Meltdown"
    assert lab.state() == before
    lab.bystander_answers()


@pytest.mark.parametrize("exc", ["GeneratorExit()", "SystemExit('text')"])
def test_other_base_exceptions_in_the_body_are_failed_loads(lab: Lab, exc: str) -> None:
    before = lab.state()
    lab.write("m", f"raise {exc}\n")
    with pytest.raises(livemod.InitError, match=exc.split("(")[0]):
        lab.host.modprobe("m")
    assert lab.state() == before
    lab.bystander_answers()


def test_init_that_hangs_is_seen_coming_with_a_growing_age(lab: Lab, wait_for: Any) -> None:
    lab.write("slow", """
        def init(mod):
            lm_probe.record("slow", "init started")
            if not lm_probe.gate("slow.go").wait(10):
                raise TimeoutError("never released")
            mod.hook("slow.h").add(lambda: "slow")
    """)
    loader, out = in_thread(lambda: lab.host.modprobe("slow"), "slow-loader")
    try:
        wait_for(lambda: lab.probe.seen("slow", "init started"), what="init to start")

        def row() -> livemod.ModuleStatus:
            return next(r for r in lab.host.lsmod() if r.name == "slow")

        first = row()
        assert first.state is State.COMING
        assert first.since <= time.monotonic()
        wait_for(lambda: time.monotonic() - first.since > 0.05, what="some time in COMING")
        second = row()
        assert second.state is State.COMING and second.since == first.since
        assert time.monotonic() - second.since > 0.05  # the age an operator sees grows
        # Meanwhile the host answers: lsmod (above), statistics, the bystander's hook.
        assert lab.host.statistics().modules == 2
        lab.bystander_answers()
        assert lab.host.hook("slow.h")() == []  # nothing published yet
        with pytest.raises(livemod.ModuleNotFound):
            lab.host.hold("slow")
    finally:
        lab.probe.gate("slow.go").set()
        loader.join(10)
    assert not loader.is_alive() and "error" not in out, out
    assert row().state is State.LIVE
    assert lab.host.hook("slow.h")() == ["slow"]


def test_modprobe_from_inside_init_loads_the_nested_module(lab: Lab) -> None:
    lab.write("inner", """
        def init(mod):
            mod.hook("inner.h").add(lambda: "inner")
    """)
    lab.write("outer", """
        def init(mod):
            host = lm_probe.kept["host"]
            inner = host.modprobe("inner")
            lm_probe.record("outer", "nested", inner.name, inner.state.name)
            mod.hook("outer.h").add(lambda: "outer")
    """)
    done, out = in_thread(lambda: lab.host.modprobe("outer"), "outer-loader")
    done.join(10)
    assert not done.is_alive(), "modprobe from init deadlocked"
    assert "error" not in out, out
    assert lab.probe.seen("outer", "nested") == [("outer", "nested", "inner", "LIVE")]
    assert {r.name: r.state for r in lab.host.lsmod()} == {
        "basic": State.LIVE, "inner": State.LIVE, "outer": State.LIVE}
    assert lab.host.hook("inner.h")() == ["inner"] and lab.host.hook("outer.h")() == ["outer"]
    lab.host.rmmod("outer")
    lab.host.rmmod("inner")


def test_a_failing_init_after_a_nested_modprobe_keeps_the_nested_module(lab: Lab) -> None:
    # The nested modprobe is a complete operation of its own: it stays loaded (documented).
    lab.write("inner", "def init(mod):\n    mod.hook('inner.h').add(lambda: 'inner')\n")
    lab.write("outer", """
        def init(mod):
            lm_probe.kept["host"].modprobe("inner")
            raise RuntimeError("outer fails after loading inner")
    """)
    with pytest.raises(livemod.InitError, match="outer fails"):
        lab.host.modprobe("outer")
    assert [r.name for r in lab.host.lsmod()] == ["basic", "inner"]
    lab.host.rmmod("inner")


# ---------------------------------------------------------------------------------- exit


def test_exit_that_raises_completes_the_unload_and_taints(lab: Lab) -> None:
    before = lab.state()
    lab.write("m", """
        def init(mod):
            mod.hook("m.h").add(lambda: "m")
            mod.on_exit(lambda: lm_probe.record("m", "undone"))

        def exit(mod):
            raise RuntimeError("exit fails on purpose")
    """)
    lab.host.modprobe("m")
    started = time.time()
    lab.host.rmmod("m")
    assert lab.state() == before
    assert lab.probe.seen("m") == [("m", "undone")]
    [taint] = lab.host.tainted
    assert (taint.flag, taint.module) == ("exit-failed", "m")
    assert "RuntimeError: exit fails on purpose" in taint.reason
    assert started <= taint.when <= time.time()
    lab.bystander_answers()


def test_exit_that_hangs_is_abandoned_after_exit_timeout(
    lab_factory: Callable[..., Lab], wait_for: Any
) -> None:
    lab = lab_factory(exit_timeout=0.3)
    lab.write("stuck", """
        def init(mod):
            mod.hook("stuck.h").add(lambda: "stuck")
            mod.on_exit(lambda: lm_probe.record("stuck", "undone"))

        def exit(mod):
            lm_probe.record("stuck", "exit entered")
            lm_probe.gate("stuck.release").wait(30)
            lm_probe.record("stuck", "exit left")
    """)
    lab.write("other", "def init(mod):\n    mod.hook('other.h').add(lambda: 'other')\n")
    lab.host.modprobe("stuck")
    try:
        started = time.monotonic()
        lab.host.rmmod("stuck")
        took = time.monotonic() - started
        assert 0.3 <= took < 3.0, took
        assert lab.probe.seen("stuck", "exit entered") and not lab.probe.seen("stuck", "exit left")
        assert lab.probe.seen("stuck", "undone")  # managed undo went on without it
        assert [r.name for r in lab.host.lsmod()] == ["basic"]
        assert lab.host.hook("stuck.h")() == []
        flags = [(t.flag, t.module) for t in lab.host.tainted]
        assert ("exit-timeout", "stuck") in flags
        assert "0.3s" in next(t.reason for t in lab.host.tainted if t.flag == "exit-timeout")
        # The host goes on: load and unload others.
        lab.host.modprobe("other")
        assert lab.host.hook("other.h")() == ["other"]
        lab.host.rmmod("other")
        lab.bystander_answers()
    finally:
        lab.probe.gate("stuck.release").set()
    wait_for(lambda: lab.probe.seen("stuck", "exit left"), what="the stuck exit to return")


@pytest.mark.parametrize("leak_check", [False, True])
def test_what_exit_leaves_in_its_threads_state_dies_with_that_thread(
    lab_factory: Callable[..., Lab], wait_for: Any, leak_check: bool
) -> None:
    """exit runs on a thread of its own (a spare one started ahead: ``_exit_runner``):
    what it leaves in a library's thread-local or context variable is not kept alive by a
    worker that outlives the module, and the leak check waits for that thread to end
    before it judges (no false ``module-leaked``)."""
    import contextvars
    import threading

    lab = lab_factory(leak_check=leak_check)
    lab.probe.kept["tls"] = threading.local()
    lab.probe.kept["var"] = contextvars.ContextVar("lm_probe_var")
    lab.write("m", """
        import threading

        class Thing:
            pass

        def exit(mod):
            thing = Thing()
            lm_probe.kept["tls"].thing = thing
            lm_probe.kept["var"].set(thing)
            lm_probe.kept["thing"] = __import__("weakref").ref(thing)
            lm_probe.record("m", "exit on", threading.current_thread().name,
                            threading.get_ident())
    """)
    idents = []
    for _ in range(3):  # the first exit starts its thread, the later ones find a spare
        lab.host.modprobe("m")
        lab.host.rmmod("m")
        [(_, _, name, ident)] = lab.probe.seen("m", "exit on")
        assert name == "livemod-exit-m"
        idents.append(ident)
        thing = lab.probe.kept.pop("thing")
        # The thread that held it in its state ends just after rmmod returns (with the
        # leak check on, the judge joins it before its verdict).
        wait_for(lambda thing=thing: thing() is None, what="the exit's thread to end")
        lab.probe.reset()
        lab.probe.kept["tls"] = threading.local()
        lab.probe.kept["var"] = contextvars.ContextVar("lm_probe_var")
    assert threading.get_ident() not in idents
    assert not [t for t in lab.host.tainted if t.flag == "module-leaked"], lab.host.tainted


def test_registering_during_exit_is_refused_and_the_unload_completes(lab: Lab) -> None:
    before = lab.state()
    lab.write("m", """
        def init(mod):
            mod.hook("m.h").add(lambda: "m")

        def exit(mod):
            for attempt in (lambda: mod.hook("late.h").add(print),
                            lambda: mod.export("late", 1),
                            lambda: mod.thread(print)):
                try:
                    attempt()
                except Exception as exc:
                    lm_probe.record("m", "refused", type(exc).__name__)
                else:
                    lm_probe.record("m", "accepted")
    """)
    lab.host.modprobe("m")
    lab.host.rmmod("m")
    assert lab.probe.seen("m") == [("m", "refused", "ModuleGoing")] * 3
    assert lab.host.hook("late.h")() == []
    assert lab.state() == before
    assert lab.host.tainted == ()


def test_exit_letting_module_going_escape_still_unloads(lab: Lab) -> None:
    lab.write("m", """
        def exit(mod):
            mod.hook("late.h").add(print)
    """)
    lab.host.modprobe("m")
    lab.host.rmmod("m")
    assert [r.name for r in lab.host.lsmod()] == ["basic"]
    [taint] = lab.host.tainted
    assert taint.flag == "exit-failed" and "ModuleGoing" in taint.reason
    assert lab.host.hook("late.h")() == []


# ---------------------------------------------------------------------- self-referential


def test_a_hook_that_rmmods_its_own_module_gets_module_busy(lab: Lab) -> None:
    lab.write("selfish", """
        def suicide():
            lm_probe.kept["host"].rmmod("selfish", timeout=1.0)

        def init(mod):
            mod.hook("selfish.go").add(suicide)
    """)
    lab.host.modprobe("selfish")
    # From the thread that owns the host...
    with pytest.raises(livemod.ModuleBusy, match="from inside its own code"):
        lab.host.hook("selfish.go")()
    # ... and from another thread: bounded, no deadlock.
    t, out = in_thread(lambda: lab.host.hook("selfish.go")(), "selfish-caller")
    t.join(10)
    assert not t.is_alive(), "self-rmmod deadlocked"
    assert isinstance(out.get("error"), livemod.ModuleBusy), out
    out.clear()
    assert [r.state for r in lab.host.lsmod() if r.name == "selfish"] == [State.LIVE]
    lab.host.rmmod("selfish")  # from outside it works


def test_a_module_that_removes_itself_from_sys_modules_still_unloads(lab: Lab) -> None:
    before = lab.state()
    lab.write("ghost", """
        import sys

        _me = __name__

        def init(mod):
            del sys.modules[_me]
            mod.hook("ghost.h").add(lambda: "boo")
    """)
    lab.host.modprobe("ghost")
    assert lab.host.hook("ghost.h")() == ["boo"]
    lab.host.rmmod("ghost")
    assert lab.state() == before
    assert lab.host.leaks() == []


def test_a_module_that_removes_every_private_name_does_not_break_the_others(lab: Lab) -> None:
    lab.write("vandal", """
        import sys

        def init(mod):
            for name in [n for n in sys.modules if n.startswith("livemod.mods._h")]:
                del sys.modules[name]
    """)
    lab.host.modprobe("vandal")
    lab.bystander_answers()
    lab.host.rmmod("vandal")
    lab.host.rmmod("basic")
    assert lab.host.lsmod() == []
    prefix = f"livemod.mods.{lab.host._tag}."
    assert not [n for n in sys.modules if n.startswith(prefix)]
    lab.host.insmod(BASIC)  # and loads again
    lab.bystander_answers()


# ---------------------------------------------------------------------- livemod's own names


@pytest.mark.parametrize("when", ["body", "init", "exit"])
def test_a_module_that_replaces_livemod_host_is_undone_and_taints(lab: Lab, when: str) -> None:
    real_host, real_error = livemod.Host, livemod.ModuleBusy
    tamper = ("import livemod\nlivemod.Host = None\n"
              "livemod.ModuleBusy = type('Fake', (Exception,), {})\n")
    body = {
        "body": tamper,
        "init": "def init(mod):\n" + textwrap.indent(tamper, "    "),
        "exit": "def exit(mod):\n" + textwrap.indent(tamper, "    "),
    }[when]
    try:
        lab.write("tamper", body)
        lab.host.modprobe("tamper")
        if when == "exit":
            assert lab.host.tainted == ()
            lab.host.rmmod("tamper")
        assert livemod.Host is real_host and livemod.ModuleBusy is real_error
        [taint] = lab.host.tainted
        assert (taint.flag, taint.module) == ("livemod-tampered", "tamper")
        assert "Host" in taint.reason and "ModuleBusy" in taint.reason
    finally:
        livemod.Host, livemod.ModuleBusy = real_host, real_error


@pytest.mark.parametrize("when", ["body", "init"])
def test_a_failing_module_that_replaced_livemod_host_is_undone(lab: Lab, when: str) -> None:
    real_host = livemod.Host
    tamper = "import livemod\nlivemod.Host = None\nraise RuntimeError('and fail')\n"
    body = tamper if when == "body" else "def init(mod):\n" + textwrap.indent(tamper, "    ")
    try:
        lab.write("tamper", body)
        with pytest.raises(livemod.InitError):
            lab.host.modprobe("tamper")
        assert livemod.Host is real_host
        assert [t.flag for t in lab.host.tainted] == ["livemod-tampered"]
    finally:
        livemod.Host = real_host


def test_a_module_that_patches_a_host_method_is_undone(lab: Lab) -> None:
    real_rmmod = livemod.Host.__dict__["rmmod"]
    try:
        lab.write("patcher", """
            import livemod

            def init(mod):
                livemod.Host.rmmod = lambda self, *a, **k: None
        """)
        lab.host.modprobe("patcher")
        assert livemod.Host.__dict__["rmmod"] is real_rmmod
        assert [t.flag for t in lab.host.tainted] == ["livemod-tampered"]
    finally:
        livemod.Host.rmmod = real_rmmod  # type: ignore[method-assign]


@pytest.mark.parametrize("change", ["added", "deleted", "renamed"])
def test_a_module_that_adds_deletes_or_renames_a_class_attribute_is_undone(
    lab: Lab, change: str
) -> None:
    # The check after each load compares each class's attribute names and values in order;
    # "renamed" after "deleted" renames the attribute that the restore put last.
    real = livemod.Module.__dict__["removal_pending"]
    before = dict(vars(livemod.Module))
    body = {
        "added": "livemod.Module.lm_extra = 1",
        "deleted": "del livemod.Module.removal_pending",
        "renamed": "livemod.Module.lm_extra = vars(livemod.Module)['removal_pending']\n"
                   "    del livemod.Module.removal_pending",
    }[change]
    try:
        lab.write("attrs", f"import livemod\n\ndef init(mod):\n    {body}\n")
        lab.host.modprobe("attrs")
        assert dict(vars(livemod.Module)) == before
        [taint] = lab.host.tainted
        assert taint.flag == "livemod-tampered" and "livemod.Module." in taint.reason
        # Restored attributes sit at the end of the class dict now: the check after the
        # next load still takes its fast path.
        from livemod._teardown import BASELINE

        assert BASELINE[0]._intact()
    finally:
        livemod.Module.removal_pending = real  # type: ignore[method-assign]
        if "lm_extra" in vars(livemod.Module):
            del livemod.Module.lm_extra  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------------- taints


def test_taints_are_permanent_and_say_when_and_which_module(lab: Lab) -> None:
    lab.write("bad_exit", "def exit(mod):\n    raise ValueError('x')\n")
    lab.write("forced", "def init(mod):\n    mod.hook('forced.h').add(lambda: 1)\n")
    lab.write("tamper", "import livemod\nlivemod.Host = None\n")
    real_host = livemod.Host
    seen: list[livemod.Taint] = []
    try:
        t0 = time.time()
        lab.host.modprobe("bad_exit")
        lab.host.rmmod("bad_exit")
        seen += lab.host.tainted[len(seen):]
        lab.host.modprobe("forced")
        with lab.host.hold("forced"):
            lab.host.rmmod("forced", force=True)
        seen += lab.host.tainted[len(seen):]
        lab.host.modprobe("tamper")
        seen += lab.host.tainted[len(seen):]
    finally:
        livemod.Host = real_host
    flags = [(t.flag, t.module) for t in seen]
    assert flags[:2] == [("exit-failed", "bad_exit"), ("forced-unload", "forced")]
    assert ("livemod-tampered", "tamper") in flags
    assert all(t0 <= t.when <= time.time() for t in seen)
    assert [t.when for t in seen] == sorted(t.when for t in seen)
    assert all(t.reason and str(t).startswith(f"{t.flag} ({t.module}): ") for t in seen)
    # Nothing clears them: reloading cleanly, unloading everything, closing.
    lab.host.modprobe("forced")
    lab.host.rmmod("forced")
    lab.host.rmmod("tamper")
    assert lab.host.tainted[: len(seen)] == tuple(seen)
    lab.host.close()
    assert lab.host.tainted[: len(seen)] == tuple(seen)
    assert lab.host.statistics().taints[: len(seen)] == tuple(seen)


# ------------------------------------------------------------------ livemod status (a real host)


def _wait_ready(proc: subprocess.Popen[str], timeout: float) -> str:
    """The host's ready line (read without a sleep; bounded by ``timeout``)."""
    import selectors

    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    buf = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while b" ready on " not in buf:
            left = deadline - time.monotonic()
            assert left > 0 and sel.select(left), f"host not ready: {buf!r}"
            data = os.read(fd, 65536)
            assert data, f"host exited: {buf!r}"
            buf += data
    return buf.decode().split(" ready on ", 1)[1].splitlines()[0].strip()


def test_livemod_status_shows_taints_of_a_real_host(tmp_path: Path) -> None:
    pytest.importorskip("cryptography", reason="signatures = 'warn' needs the sign extra "
                        "(cryptography), which has no wheel for free-threaded 3.13t")
    work = Path(tempfile.mkdtemp(prefix="lmmis"))  # short: socket paths must fit 107 bytes
    try:
        mods = work / "mods"
        mods.mkdir()
        (mods / "unsigned.py").write_text('__livemod__ = {"name": "unsigned"}\n')
        (mods / "failexit.py").write_text(
            '__livemod__ = {"name": "failexit"}\n\n'
            "def exit(mod):\n    raise RuntimeError('exit broke')\n")
        keys = work / "keys"
        keys.mkdir()
        config = work / "livemod.toml"
        config.write_text(f'[host]\nmodpath = ["{mods}"]\nsignatures = "warn"\n'
                          f'trusted_keys = "{keys}"\n')
        sock = str(work / "h.sock")
        with tempfile.TemporaryFile("w+") as errors:
            proc = subprocess.Popen([*LIVEMOD, "host", "--config", str(config), "--socket",
                                     sock, "--name", "taint-test"],
                                    stdout=subprocess.PIPE, stderr=errors, text=True)
            try:
                assert _wait_ready(proc, 15.0) == sock

                def cli(*args: str) -> subprocess.CompletedProcess[str]:
                    r = subprocess.run([*LIVEMOD, *args, "--socket", sock],
                                       capture_output=True, text=True, timeout=30)
                    assert r.returncode == 0, (args, r.stdout, r.stderr)
                    return r

                clean = cli("status").stdout
                assert "tainted:  no" in clean
                cli("modprobe", "unsigned")
                cli("modprobe", "failexit")
                cli("rmmod", "failexit")
                text = cli("status").stdout
                assert "tainted:  yes, 3 taint(s)" in text
                assert "unsigned-module (unsigned): it is unsigned" in text
                assert "exit-failed (failexit): exit raised RuntimeError: exit broke" in text
                data = json.loads(cli("status", "--json").stdout)
                assert [(t["flag"], t["module"]) for t in data["taints"]] == [
                    ("unsigned-module", "unsigned"), ("unsigned-module", "failexit"),
                    ("exit-failed", "failexit")]
                assert all(isinstance(t["when"], float) and t["reason"] for t in data["taints"])
                table = cli("lsmod").stdout
                assert "Taints" in table and "unsigned-module" in table
            finally:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                code = proc.wait(15)
                assert proc.stdout is not None
                proc.stdout.close()
                errors.seek(0)
                assert code == 0, errors.read()
    finally:
        shutil.rmtree(work, ignore_errors=True)
