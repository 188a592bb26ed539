"""What depends on the interpreter: the leak verdict on free-threaded 3.13t (where unloaded code
is immortal), the referrer search's bound in calls, and the signing extra when it is missing.

Each test runs on every interpreter and asserts what is true there: on 3.13t the host says the
leak check cannot be verified (never a leak, a taint or a silent pass), elsewhere it gives its
verdict.
"""

from __future__ import annotations

import gc
import os
import selectors
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
import types
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import livemod
from livemod import _leak_watch, _leaks

pytestmark = pytest.mark.usefixtures("no_stray_threads")

LIVEMOD = [sys.executable, "-m", "livemod.cli"]
FREE_THREADED = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
LEAK_UNVERIFIABLE = _leaks.unverifiable()
SENTENCE = "cannot be verified on this interpreter (functions and classes are immortal on 3.13t)"
LEAKY = Path(livemod.__file__).parent / "examples" / "leaky.py"


def test_the_leak_check_says_whether_it_can_give_a_verdict_here() -> None:
    if FREE_THREADED and sys.version_info < (3, 14):
        assert _leaks.unverifiable() == SENTENCE
    else:
        assert _leaks.unverifiable() is None
    with livemod.Host(name="rt-on") as on, livemod.Host(name="rt-off", leak_check=False) as off:
        assert on.statistics().leak_check == (LEAK_UNVERIFIABLE or "on")
        assert off.statistics().leak_check == "off"


def test_an_unload_gets_a_verdict_or_says_it_cannot_have_one() -> None:
    # leaky leaves a callback in the demo application's registry: a real leak on 3.11-3.13.
    from livemod import demo

    with livemod.Host(name="rt-leaky") as host:
        try:
            _unload_leaky(host)
        finally:
            demo.CALLBACKS.clear()


def _unload_leaky(host: livemod.Host) -> None:
    host.insmod(LEAKY)
    host.rmmod("leaky")
    unload = [e for e in host.events() if e.kind == "unload"][-1]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        found = host.leaks()
    flags = [t.flag for t in host.tainted]
    if LEAK_UNVERIFIABLE is None:
        assert [leak.name for leak in found] == ["leaky"]
        assert flags == ["module-leaked"]
        assert caught == []
        assert "leak check" not in unload.message
    else:  # not a leak, not a taint, and not a silent pass
        assert found == [] and flags == []
        assert [str(w.message) for w in caught] == [
            f"livemod: the leak check {SENTENCE}; leaks() is empty because no verdict is "
            f"possible here"]
        assert caught[0].category is RuntimeWarning
        assert caught[0].filename == __file__  # it points at the caller of leaks()
        assert unload.message == f"unloaded 0.1.0; leak check {SENTENCE}"
        assert unload.data["leak_check"] == SENTENCE


# --------------------------------------------------------------------- over the socket


def _lines_until(proc: subprocess.Popen[str], marker: str, timeout: float) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    buf = ""
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout.fileno(), selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if sel.select(timeout=0.2):
                chunk = os.read(proc.stdout.fileno(), 4096).decode()
                if not chunk:
                    break
                buf += chunk
                for line in buf.splitlines():
                    if marker in line:
                        return line
    raise AssertionError(f"no line with {marker!r} within {timeout}s: {buf!r}")


@pytest.fixture
def host_process() -> Iterator[dict[str, str]]:
    """``livemod host`` on a folder holding one plain module; yields an environment pointing
    at it (``LM_RT_FOLDER``: the folder)."""
    folder = tempfile.mkdtemp(prefix="lmrt")  # short: socket paths must fit 107 bytes
    sock = os.path.join(folder, "h.sock")
    Path(folder, "plain.py").write_text(
        '__livemod__ = {"name": "plain", "version": "1.0"}\n\n\n'
        "def init(mod):\n    mod.hook('plain.h').add(lambda: 'hi')\n")
    with tempfile.TemporaryFile("w+") as errors:
        proc = subprocess.Popen([*LIVEMOD, "host", "--modpath", folder, "--socket", sock],
                                stdout=subprocess.PIPE, stderr=errors, text=True)
        try:
            _lines_until(proc, " ready on ", 30.0)
            yield {**os.environ, "LIVEMOD_SOCKET": sock, "LM_RT_FOLDER": folder}
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(5)
                assert proc.stdout is not None
                proc.stdout.close()
                shutil.rmtree(folder, ignore_errors=True)


def _cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([*LIVEMOD, *args], capture_output=True, text=True, env=env,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_status_leaks_lsmod_and_modinfo_say_where_no_verdict_is_possible(
    host_process: dict[str, str],
) -> None:
    env = host_process
    plain = os.path.join(env["LM_RT_FOLDER"], "plain.py")
    _cli(env, "insmod", plain)
    _cli(env, "rmmod", "plain")
    _cli(env, "insmod", plain)
    status, leaks = _cli(env, "status"), _cli(env, "leaks")
    lsmod, modinfo = _cli(env, "lsmod"), _cli(env, "modinfo", "plain")
    if LEAK_UNVERIFIABLE is None:
        assert "leaked:   0\n" in status
        assert leaks == "no leaks: every unloaded module's code is gone\n"
        assert "note:" not in lsmod and "note:" not in modinfo
    else:
        assert f"leaked:   {SENTENCE}\n" in status
        assert leaks == f"no verdict: the leak check {SENTENCE}\n"
        assert lsmod.endswith(f"note: leak check {SENTENCE}\n")
        assert modinfo.endswith(f"note:        leak check {SENTENCE}\n")
    # --json output stays the plain record, for scripts.
    assert '"leak_check"' in _cli(env, "status", "--json")
    assert _cli(env, "lsmod", "--json").lstrip().startswith("[")


# ------------------------------------------------------------- the referrer search bound


def test_the_referrer_search_is_bounded_in_calls_not_only_in_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Each gc.get_referrers call scans the whole heap (on 3.13t every object of every thread)
    # and cannot be interrupted, so a time budget alone is overrun by a wide fan-in: here
    # thousands of lists hold the survivor, and the walk would pop each of them. It needs
    # no verdict (the fan-in keeps the function alive everywhere), so it runs on 3.13t too,
    # where four tests hung in this walk before the bound.
    module = types.ModuleType("lm_rt_fanin")
    exec("def kept():\n    return 1\n", vars(module))
    fan_in = [[module.kept] for _ in range(3000)]
    watch = _leak_watch.watch("fanin", "1", [module])
    calls = [0]
    real = gc.get_referrers

    def counting(*objs: Any) -> list[Any]:
        calls[0] += 1
        return real(*objs)

    monkeypatch.setattr(gc, "get_referrers", counting)
    watch.explain(budget=120.0)  # time is not what stops it
    monkeypatch.undo()
    assert calls[0] <= _leaks._MAX_REFERRER_CALLS, calls[0]
    assert watch.chains  # still says what it found
    del fan_in, module


# ------------------------------------------------------------------- the signing extra


def test_a_missing_signing_extra_gives_a_clear_error(tmp_path: Path) -> None:
    # As on 3.13t, where cryptography has no wheel: the import is blocked in a real process.
    code = (
        "import sys; sys.modules['cryptography'] = None\n"
        "import livemod\n"
        "try:\n"
        f"    livemod.Host(signatures='enforce', trusted_keys={str(tmp_path)!r})\n"
        "except livemod.LivemodError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    message = done.stdout.strip()
    assert "cryptography" in message and message.endswith("pip install 'livemod[sign]'"), (
        message)
