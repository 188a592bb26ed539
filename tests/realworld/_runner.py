"""One real-world case, run in a subprocess with no installed package reachable.

argv: modpath, module, cycles; stdin: the exercise. Loads the module with modprobe (its
dependencies first), runs the exercise with ``ns`` bound to ``host.namespace(module)``,
unloads everything, and repeats. Prints one JSON line of measurements: whether it
loaded, worked and left nothing behind, survivors (modules the leak check found alive),
live livemod namespaces, RSS growth per cycle after the first, and how process
registries grew after the first cycle (what they grew by in the first cycle is shown apart:
the standard library registers some things once per process, such as the atexit callback
of weakref.finalize, the first time a package uses them).
"""

from __future__ import annotations

import atexit
import gc
import json
import logging
import os
import sys
import traceback
import types
import warnings
from typing import Any

import livemod
from livemod import _atexit_slots


def _trimmer() -> Any:
    # glibc keeps freed heap memory mapped: RSS then grows by fragmentation alone (rich:
    # ~0.7 MiB a cycle, ~0.04 with the heap trimmed). Trimmed before each reading, RSS
    # growth is memory still in use.
    try:
        import ctypes

        return ctypes.CDLL(None).malloc_trim
    except (ImportError, OSError, AttributeError):
        return None


_TRIM = _trimmer()


def rss_mib() -> float:
    if _TRIM is not None:
        _TRIM(0)
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def registries() -> dict[str, int]:
    handlers = sum(len(getattr(lg, "handlers", ())) for lg in
                   logging.Logger.manager.loggerDict.values()) + len(logging.root.handlers)
    return {
        "warnings": len(warnings.filters),
        # atexit's table never shrinks (3.11-3.13): slots holding a detached livemod
        # trampoline, parked for the next load, are not live callbacks.
        "atexit": atexit._ncallbacks() - _atexit_slots.parked(),
        "handlers": handlers,
        "meta_path": len(sys.meta_path),
        "path_hooks": len(sys.path_hooks),
        "excepthook": int(sys.excepthook is not sys.__excepthook__),
    }


def namespaces() -> int:
    return sum(1 for o in gc.get_objects() if type(o) is types.ModuleType
               and o.__name__.startswith("livemod.mods."))


def loaded_modules(host: livemod.Host) -> list[str]:
    return [row.name for row in host.lsmod()]


def main() -> None:
    modpath, module, cycles = sys.argv[1], sys.argv[2], int(sys.argv[3])
    exercise = compile(sys.stdin.read(), f"<exercise {module}>", "exec")
    assert not any("site-packages" in p for p in sys.path), sys.path
    out: dict[str, Any] = {"module": module, "loaded": False, "works": False,
                           "clean": False}
    host = livemod.Host(modpath=[modpath], name="realworld", timeout=10.0)
    base_reg = registries()
    first_reg = base_reg
    rss: list[float] = []
    errors: list[str] = []
    survivors = 0
    try:
        for cycle in range(cycles):
            try:
                host.modprobe(module)
            except Exception as exc:
                errors.append(f"load: {type(exc).__name__}: {exc}".replace("\n", " "))
                if exc.__cause__ is not None:
                    cause = traceback.format_exception_only(exc.__cause__)
                    errors.append(f"cause: {''.join(cause).strip()}")
                break
            out["loaded"] = True
            native: set[str] = set(out.get("native", ()))
            try:
                exec(exercise, {"ns": host.namespace(module), "__name__": "exercise"})
                out["works"] = out["works"] or cycle == 0
            except Exception as exc:
                out["works"] = False
                tb = traceback.extract_tb(exc.__traceback__)[-1]
                errors.append(f"exercise: {type(exc).__name__}: {exc} at {tb.filename}:"
                              f"{tb.lineno}".replace("\n", " "))
            native.update(n for row in host.lsmod() for n in row.native)
            out["native"] = sorted(native)
            try:
                for name in reversed(_load_order(host)):
                    host.rmmod(name)
            except Exception as exc:
                errors.append(f"unload: {type(exc).__name__}: {exc}".replace("\n", " "))
                break
            gc.collect()
            survivors = len(host.leaks())
            rss.append(rss_mib())
            if cycle == 0:
                first_reg = registries()
            if errors:
                break
    finally:
        reg = registries()
        out["registries"] = {k: reg[k] - first_reg[k] for k in reg}
        out["registries_once"] = {k: first_reg[k] - base_reg[k] for k in reg}
        out["survivors"] = survivors
        out["namespaces"] = namespaces()
        growth = (rss[-1] - rss[0]) / (len(rss) - 1) if len(rss) > 1 else 0.0
        out["rss_per_cycle_mib"] = round(growth, 2)
        out["cycles"] = len(rss)
        if errors:
            out["error"] = " | ".join(errors)
        out["clean"] = bool(out["loaded"] and out["works"] and not errors and survivors == 0
                            and out["namespaces"] == 0
                            and not any(out["registries"].values()))
        print(json.dumps(out))
        sys.stdout.flush()
        os._exit(0)  # the host's close would run module exits again; the row is written


def _load_order(host: livemod.Host) -> list[str]:
    """Loaded modules, dependencies before their users."""
    rows = {r.name: r for r in host.lsmod()}
    order: list[str] = []

    def visit(name: str) -> None:
        if name in order:
            return
        for dep in rows[name].uses:
            visit(dep)
        order.append(name)

    for name in rows:
        visit(name)
    return order


if __name__ == "__main__":
    main()
