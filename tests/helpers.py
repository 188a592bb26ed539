"""Small helpers shared by the test modules (pytest puts this folder on sys.path)."""

from __future__ import annotations

import os
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any


def in_thread(fn: Callable[[], Any], name: str = "test-helper") -> tuple[threading.Thread, dict]:
    """Run ``fn`` in a thread; the dict gets 'result' or 'error' when it finishes."""
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["result"] = fn()
        except BaseException as exc:
            out["error"] = exc

    t = threading.Thread(target=run, name=name, daemon=True)
    t.start()
    return t, out


def race_scale() -> int:
    """How many times longer than by default a fixed-size race runs: LIVEMOD_STRESS_SECONDS
    over its default of 8 s, at least 1 (CI runs the races longer where the GIL is off)."""
    try:
        seconds = float(os.environ.get("LIVEMOD_STRESS_SECONDS", "") or 8.0)
    except ValueError:
        return 1
    return max(1, round(seconds / 8.0))


def write_tree(root: Path, files: dict[str, str]) -> None:
    """Write each ``relative path -> text`` under ``root`` (dedented), making folders."""
    for rel, text in files.items():
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(textwrap.dedent(text))
