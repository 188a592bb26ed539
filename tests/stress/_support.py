"""Shared helpers for the stress tests: the time budget and a test-owned call recorder."""

from __future__ import annotations

import itertools
import os
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

__all__ = ["RECORDER_SOURCE", "install_recorder", "private_modules", "stress_seconds",
           "wait_until"]

_DEFAULT_SECONDS = 8.0
_names = itertools.count()


def stress_seconds() -> float:
    """How long each race runs: ``LIVEMOD_STRESS_SECONDS`` (default 8 s)."""
    raw = os.environ.get("LIVEMOD_STRESS_SECONDS", "")
    try:
        value = float(raw) if raw else _DEFAULT_SECONDS
    except ValueError:
        message = f"LIVEMOD_STRESS_SECONDS must be a number of seconds, not {raw!r}"
        raise ValueError(message) from None
    return max(0.5, value)


#: The recorder: a plain module the generated livemod modules import by a normal ``import``,
#: so every instance of every module reports into one place the test owns. The protocol is a
#: seqlock of its own: a call announces itself (``inside``) *before* it looks at the exit flag,
#: and exit sets the flag *before* it looks at ``inside``. So a call that overlaps an exit in
#: any interleaving is caught by one side or the other: either the call sees the flag (a call
#: that arrived after exit began: ``late``) or exit sees the call (exit began while a call was
#: inside: ``overlap``).
RECORDER_SOURCE = textwrap.dedent('''
    """Test-owned recorder shared by every generated module instance."""

    import weakref

    exit_began = {}   # token -> True once that instance's exit (or managed undo) began
    inside = {}       # token -> list, one entry per call currently inside the instance
    late = []         # (token, where): calls that arrived after exit began
    overlap = []      # (token, n): exit began while n calls were inside
    started = []      # tokens whose init ran
    code = []         # weak references to one function of each instance (a leak check)


    def register(token, fn=None):
        inside[token] = []
        started.append(token)
        if fn is not None:
            code.append(weakref.ref(fn))


    def enter(token):
        inside[token].append(None)
        if token in exit_began:
            late.append((token, "enter"))


    def check(token, where):
        if token in exit_began:
            late.append((token, where))


    def leave(token):
        inside[token].pop()


    def exiting(token):
        exit_began[token] = True
        n = len(inside[token])
        if n:
            overlap.append((token, n))
''')


def install_recorder(folder: Path) -> tuple[str, ModuleType, Callable[[], None]]:
    """Write a uniquely named recorder into ``folder``, import it, return (name, module,
    cleanup). ``cleanup`` takes it off ``sys.path`` and out of ``sys.modules``."""
    name = f"_livemod_stress_recorder_{os.getpid()}_{next(_names)}"
    (folder / f"{name}.py").write_text(RECORDER_SOURCE)
    sys.path.insert(0, str(folder))
    module = __import__(name)

    def cleanup() -> None:
        if str(folder) in sys.path:
            sys.path.remove(str(folder))
        sys.modules.pop(name, None)

    return name, module, cleanup


def private_modules() -> set[str]:
    """Every ``sys.modules`` name livemod uses for a loaded module (any host)."""
    return {n for n in list(sys.modules) if n.startswith("livemod.mods._h")}


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Bounded wait for a condition made true by another thread (no fixed sleeps)."""
    deadline = time.monotonic() + timeout
    delay = 0.0005
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 0.02)
    return True
