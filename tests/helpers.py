"""Small helpers shared by the test modules (pytest puts this folder on sys.path)."""

from __future__ import annotations

import threading
from collections.abc import Callable
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
