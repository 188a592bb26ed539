"""Reading a key of a namespace dict (a module's or an object's ``__dict__``) without
``dict.get``.

On CPython 3.13's free-threaded build (measured on 3.13.5t), the first ``dict.get`` on a
dict from a thread that does not own it can wait, once the busy threads outnumber the
cores, about 25 ms for each of them: on 2 cores nothing with 2 busy threads, 57 ms with
3, 0.2 s with 8 (``bench/bench_first_touch.py``); once per dict, then never again. A
module's ``__dict__`` behaves so for every thread, its creator too. ``in`` and a
subscript do not wait, and a ``dict.get`` after either is cheap; the GIL builds are not
affected. An unload reads the names of every module in ``sys.modules`` (hundreds the
first time), so with ``dict.get`` one rmmod under a busy service took seconds
(``tests/stress/test_dispatch_race.py`` with the machine loaded: 8.6 s); the scrub reads
every logger's and handler's ``__dict__``, and an rmmod sent over the control socket runs
on a thread that owns none of them. The reads here take the two cheap steps instead; on
the GIL builds they cost one more lookup.

For an exact dict with exact-string keys, as a module's namespace and an ordinary
instance's ``__dict__`` are, both steps are C-level and run no Python code; anything else
(a class whose ``__dict__`` is a property) runs what its ``.get`` would have run.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ns_get"]


def ns_get(ns: dict[str, Any], key: str) -> Any:
    """``ns.get(key)`` for a namespace dict ``ns`` that this thread may not have read yet
    (see the module docstring)."""
    return ns[key] if key in ns else None  # noqa: SIM401 (the point of this module)
