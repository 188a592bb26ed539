"""Hook specs, firstresult, wrappers and historic calls (_specs), checked against pluggy.

Where pluggy documents the same behaviour, the test runs the same implementations through a
pluggy ``PluginManager`` side by side (pluggy calls its implementations last-registered
first, so they are registered there in reverse to get livemod's call order).
"""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import livemod

pluggy = pytest.importorskip("pluggy")

pytestmark = pytest.mark.usefixtures("no_stray_threads")


@pytest.fixture
def spec_host() -> Iterator[livemod.Host]:
    with livemod.Host() as host:
        yield host


def module(tmp_path: Path, name: str, body: str) -> Path:
    """A module file ``name`` whose init runs ``body`` (``mod`` in scope)."""
    path = tmp_path / f"{name}.py"
    head = f'__livemod__ = {{"name": "{name}", "version": "1.0.0"}}\n'
    path.write_text(head + textwrap.dedent(body))
    return path


def side_by_side(impls: list[Callable[..., Any]], *, firstresult: bool = False,
                 wrappers: tuple[int, ...] = ()) -> Any:
    """A pluggy hook 'h(req, flag)' with ``impls`` (pluggy order made to match ours)."""
    spec = pluggy.HookspecMarker("t")
    mark = pluggy.HookimplMarker("t")

    class Spec:
        @spec(firstresult=firstresult)
        def h(self, req: Any, flag: Any) -> Any: ...

    pm = pluggy.PluginManager("t")
    pm.add_hookspecs(Spec)
    for i in reversed(range(len(impls))):
        fn = mark(wrapper=True)(impls[i]) if i in wrappers else mark(impls[i])
        pm.register(type("P", (), {"h": staticmethod(fn)})(), name=f"p{i}")
    return pm.hook.h


def declare(host: livemod.Host, *, firstresult: bool = False) -> None:
    @host.spec("h", firstresult=firstresult)
    def h(req: Any, flag: Any = False) -> Any:
        """Called for each request."""


# ------------------------------------------------------------------------------- specs


IMPLS = '''
def whole(req, flag):
    return ("whole", req, flag)

def only_flag(flag):
    return ("only_flag", flag)

def keeps_default(req, extra="kept"):
    return ("keeps_default", req, extra)

def init(mod):
    for fn in (whole, only_flag, keeps_default):
        mod.hook("h").add(fn)
'''


def test_an_implementation_takes_the_spec_params_it_names(
    spec_host: livemod.Host, tmp_path: Path
) -> None:
    declare(spec_host)
    spec_host.insmod(module(tmp_path, "impls", IMPLS))
    hook = spec_host.hook("h")
    want = [("whole", 1, True), ("only_flag", True), ("keeps_default", 1, "kept")]
    assert hook(1, True) == hook.call(req=1, flag=True) == hook.call(1, flag=True) == want
    assert hook(1) == [("whole", 1, False), ("only_flag", False), ("keeps_default", 1, "kept")]
    ns: dict[str, Any] = {}
    exec(IMPLS, ns)
    pm_hook = side_by_side([ns["whole"], ns["only_flag"], ns["keeps_default"]])
    assert pm_hook(req=1, flag=True) == want
    with pytest.raises(TypeError):
        hook(1, 2, 3)  # the spec's signature is the hook's


def test_an_unknown_parameter_fails_init_cleanly_naming_hook_and_parameter(
    spec_host: livemod.Host, tmp_path: Path
) -> None:
    declare(spec_host)
    bad = module(tmp_path, "bad", '''
        def fine(req):
            return 1

        def impl(req, user):
            return 2

        def init(mod):
            mod.hook("h").add(fine)
            mod.hook("h").add(impl)
    ''')
    with pytest.raises(livemod.InitError) as excinfo:
        spec_host.insmod(bad)
    cause = excinfo.value.__cause__
    assert isinstance(cause, livemod.SpecError)
    assert cause.hook == "h"
    text = str(cause)
    assert "'h'" in text and "'user'" in text and "h(req, flag=False)" in text
    assert "add it to the spec" in text
    assert spec_host.lsmod() == [] and len(spec_host.hook("h")) == 0
    # pluggy refuses the same implementation at register time.
    ns: dict[str, Any] = {}
    exec("def impl(req, user): return 2", ns)
    with pytest.raises(pluggy.PluginValidationError):
        side_by_side([ns["impl"]])


def test_a_spec_declared_later_checks_the_live_implementations(
    spec_host: livemod.Host, tmp_path: Path
) -> None:
    spec_host.insmod(module(tmp_path, "early", '''
        def impl(x):
            return x

        def init(mod):
            mod.hook("h").add(impl)
    '''))
    with pytest.raises(livemod.SpecError, match=r"'x'"):
        declare(spec_host)
    assert spec_host.hook("h").spec is None
    assert spec_host.hook("h")(x=3) == [3]  # left as it was


def test_bad_specs_are_refused(spec_host: livemod.Host) -> None:
    with pytest.raises(livemod.SpecError, match=r"\*args/\*\*kwargs"):
        spec_host.spec("a")(lambda *args: None)
    with pytest.raises(livemod.SpecError, match="reserved"):
        spec_host.spec("b")(lambda concurrent: None)
    declare(spec_host)
    declare_again = spec_host.spec("h")

    def other(req: Any) -> None: ...

    with pytest.raises(livemod.SpecError, match="already has the spec"):
        declare_again(other)


def test_a_wrapper_that_is_not_a_generator_fails_at_add(
    spec_host: livemod.Host, tmp_path: Path
) -> None:
    path = module(tmp_path, "nowrap", '''
        def wrap(req):
            return 1

        def init(mod):
            mod.hook("h").add(wrap, wrapper=True)
    ''')
    with pytest.raises(livemod.InitError) as excinfo:
        spec_host.insmod(path)
    assert isinstance(excinfo.value.__cause__, livemod.SpecError)
    assert "not a generator function" in str(excinfo.value.__cause__)
    assert "'wrap'" in str(excinfo.value.__cause__)


# ------------------------------------------------------------------------- firstresult


FIRST = '''
CALLS = []

def none(req, flag):
    CALLS.append("none")

def first(req, flag):
    CALLS.append("first")
    return ("first", req)

def later(req, flag):
    CALLS.append("later")
    return "later"
'''


def test_firstresult_returns_the_first_result_that_is_not_none(
    spec_host: livemod.Host, tmp_path: Path
) -> None:
    declare(spec_host, firstresult=True)
    hook = spec_host.hook("h")
    assert hook(1) is None and hook.call(1) is None  # no implementation yet
    m = spec_host.insmod(module(tmp_path, "first", FIRST + '''
def init(mod):
    for fn in (none, first, later):
        mod.hook("h").add(fn)
    mod.export("calls", CALLS)
'''))
    assert hook(1) == ("first", 1)
    assert m.exports["calls"] == ["none", "first"]  # stops at the first result
    ns: dict[str, Any] = {}
    exec(FIRST, ns)
    assert side_by_side([ns["none"], ns["first"], ns["later"]], firstresult=True)(
        req=1, flag=False) == ("first", 1)
    assert ns["CALLS"] == ["none", "first"]
    assert asyncio.run(hook.acall(1)) == ("first", 1)
    assert asyncio.run(hook.acall(1, concurrent=True)) == ("first", 1)


# ----------------------------------------------------------------------------- wrappers


WRAPS = '''
SEEN = []

def outer(req, flag):
    SEEN.append("outer before")
    try:
        result = yield
    except ValueError as exc:
        SEEN.append(f"outer saw {exc}")
        return ["recovered"]
    SEEN.append(f"outer after {result}")
    return result + ["outer"]

def inner(req):
    SEEN.append("inner before")
    result = yield
    SEEN.append(f"inner after {result}")
    return result

def impl(req, flag):
    SEEN.append("impl")
    if req == "boom":
        raise ValueError("boom")
    return req
'''


def test_wrappers_run_around_the_implementations_as_pluggy_does(
    spec_host: livemod.Host, tmp_path: Path
) -> None:
    declare(spec_host)
    m = spec_host.insmod(module(tmp_path, "wraps", WRAPS + '''
def init(mod):
    mod.hook("h").add(impl)
    mod.hook("h").add(outer, wrapper=True, priority=1)
    mod.hook("h").add(inner, wrapper=True)
    mod.export("seen", SEEN)
'''))
    seen = m.exports["seen"]
    hook = spec_host.hook("h")
    assert hook(1) == [1, "outer"]
    want = ["outer before", "inner before", "impl", "inner after [1]", "outer after [1]"]
    assert seen == want
    seen.clear()
    assert hook("boom") == ["recovered"]  # the exception reached the wrappers
    assert seen == ["outer before", "inner before", "impl", "outer saw boom"]
    assert spec_host.hook("h").implementations() == ("wraps:outer", "wraps:impl", "wraps:inner")
    ns: dict[str, Any] = {}
    exec(WRAPS, ns)
    pm_hook = side_by_side([ns["outer"], ns["inner"], ns["impl"]], wrappers=(0, 1))
    assert pm_hook(req=1, flag=False) == [1, "outer"]
    assert ns["SEEN"] == want
    assert pm_hook(req="boom", flag=False) == ["recovered"]
    seen.clear()
    assert asyncio.run(hook.acall(2)) == [2, "outer"]
    assert seen == ["outer before", "inner before", "impl", "inner after [2]",
                    "outer after [2]"]


def test_a_wrapper_that_does_not_yield_is_a_clear_error(
    spec_host: livemod.Host, tmp_path: Path
) -> None:
    spec_host.insmod(module(tmp_path, "noyield", '''
        def wrap(x):
            if x:
                return "early"
            yield

        def impl(x):
            return x

        def init(mod):
            mod.hook("u").add(wrap, wrapper=True)
            mod.hook("u").add(impl)
    '''))
    hook = spec_host.hook("u")
    assert hook(0) is None  # the wrapper returned None: that is the result, as in pluggy
    with pytest.raises(RuntimeError, match=r"hook 'u': wrapper noyield:wrap returned without "
                                           r"yielding"):
        hook(1)


# ----------------------------------------------------------------------------- historic


LATE = '''
GOT = []

def impl(app):
    GOT.append(app)
    return f"late saw {app}"

def init(mod):
    mod.hook("app.started").add(impl)
    mod.export("got", GOT)
'''


def test_historic_calls_reach_implementations_published_later(
    spec_host: livemod.Host, tmp_path: Path
) -> None:
    results: list[Any] = []
    hook = spec_host.hook("app.started")
    hook.call_historic("app-1", result_callback=results.append)
    hook.call_historic(app="app-2")
    m = spec_host.insmod(module(tmp_path, "late", LATE))
    assert m.exports["got"] == ["app-1", "app-2"]
    assert results == ["late saw app-1"]
    hook.call_historic("app-3", result_callback=results.append)
    assert m.exports["got"] == ["app-1", "app-2", "app-3"]  # exactly once each
    assert results == ["late saw app-1", "late saw app-3"]
    spec_host.rmmod("late")
    again = spec_host.insmod(module(tmp_path, "late", LATE))
    assert again.exports["got"] == ["app-1", "app-2", "app-3"]

    # pluggy: the same for a plugin registered after the historic calls.
    spec = pluggy.HookspecMarker("t")
    mark = pluggy.HookimplMarker("t")

    class Spec:
        @spec(historic=True)
        def started(self, app: Any) -> None: ...

    pm = pluggy.PluginManager("t")
    pm.add_hookspecs(Spec)
    pm.hook.started.call_historic(kwargs={"app": "app-1"})
    got: list[Any] = []

    def started(app: Any) -> None:
        got.append(app)

    pm.register(type("P", (), {"started": staticmethod(mark(started))})())
    assert got == ["app-1"]


def test_a_failing_replay_is_reported_and_the_load_still_succeeds(
    spec_host: livemod.Host, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spec_host.hook("app.started").call_historic("x")
    spec_host.insmod(module(tmp_path, "fails", '''
        def impl(app):
            raise ValueError("replay failed on purpose")

        def init(mod):
            mod.hook("app.started").add(impl)
    '''))
    assert [s.state for s in spec_host.lsmod()] == [livemod.State.LIVE]
    assert spec_host.lsmod()[0].errors == 1
    assert "replay failed on purpose" in caplog.text
    with pytest.raises(ValueError, match="replay failed"):  # a live call raises as usual
        spec_host.hook("app.started").call_historic("y")


# ------------------------------------------------------------------------ listing, call


def test_hooks_lists_specs_and_implementations_in_call_order(
    spec_host: livemod.Host, tmp_path: Path
) -> None:
    declare(spec_host, firstresult=True)
    spec_host.insmod(module(tmp_path, "wraps", WRAPS + '''
def init(mod):
    mod.hook("h").add(impl)
    mod.hook("h").add(outer, wrapper=True, priority=1)
'''))
    spec_host.hook("empty.undeclared")
    [row] = spec_host.hooks()
    assert row["name"] == "h"
    assert row["spec"] == {"signature": "(req, flag=False)",
                           "firstresult": True, "doc": "Called for each request."}
    assert [(i["impl"], i["wrapper"]) for i in row["implementations"]] == [
        ("wraps:outer", True), ("wraps:impl", False)]


def test_a_kept_call_forwards_to_the_current_dispatcher(
    spec_host: livemod.Host, tmp_path: Path
) -> None:
    one = module(tmp_path, "one", '''
        def impl(x):
            return ("one", x)

        def init(mod):
            mod.hook("k").add(impl)
    ''')
    hook = spec_host.hook("k")
    kept = hook.call
    spec_host.insmod(one)
    assert kept(1) == [("one", 1)]
    kept_one = hook.call
    spec_host.rmmod("one")
    assert kept_one(2) == [] and kept(2) == []
    spec_host.insmod(module(tmp_path, "two", '''
        def impl(y, z=0):
            return ("two", y, z)

        def init(mod):
            mod.hook("k").add(impl)
    '''))
    assert kept_one(3) == [("two", 3, 0)]  # another shape now: still forwarded
    assert hook.call(3, z=1) == hook(3, z=1) == [("two", 3, 1)]


HOST_PROGRAM = '''
import sys, livemod
from livemod.control.server import ControlServer

host = livemod.Host()

@host.spec("auth.user", firstresult=True)
def user(token):
    """Who holds this token."""

host.insmod(sys.argv[2])
server = ControlServer(host, sys.argv[1]).start()
print("ready", flush=True)
sys.stdin.read()
server.close()
host.close()
'''


def test_livemod_hooks_lists_them_over_the_socket(tmp_path: Path) -> None:
    import json
    import os
    import subprocess
    import sys
    import tempfile

    folder = tempfile.mkdtemp(prefix="lmspec")  # short: socket paths must fit 107 bytes
    sock = os.path.join(folder, "h.sock")
    path = module(tmp_path, "auth", '''
        def by_token(token):
            return None

        def audit(token):
            result = yield
            return result

        def init(mod):
            mod.hook("auth.user").add(by_token)
            mod.hook("auth.user").add(audit, wrapper=True)
    ''')
    program = tmp_path / "prog.py"
    program.write_text(HOST_PROGRAM)
    proc = subprocess.Popen([sys.executable, str(program), sock, str(path)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        cmd = [sys.executable, "-m", "livemod.cli", "hooks", "--socket", sock]
        text = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        assert text.returncode == 0, text.stderr
        assert text.stdout.splitlines() == [
            "auth.user(token)  firstresult",
            "    Who holds this token.",
            "  1. auth:by_token (priority 0)",
            "  2. auth:audit (priority 0) [wrapper]",
        ]
        rows = json.loads(subprocess.run([*cmd, "--json"], capture_output=True, text=True,
                                         timeout=30).stdout)
        assert [r["name"] for r in rows] == ["auth.user"]
        assert rows[0]["spec"]["firstresult"] is True
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(30)
        import shutil
        shutil.rmtree(folder, ignore_errors=True)
