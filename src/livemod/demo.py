"""``livemod demo``: a host under load, showing what livemod guarantees, in about 15 s.

It plays a small application: threads serve "requests" through a hook while modules are
unloaded and loaded again under them, an init fails half way, an unload is refused because a
module is held, and a leak is found and named. Then it prints what happened. It uses only
the public API.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

import livemod

#: The application's own registry of callbacks; the ``leaky`` example leaves one here.
CALLBACKS: list[Callable[..., Any]] = []

_EXAMPLES = os.path.join(os.path.dirname(__file__), "examples")

#: Seconds each client waits after every 64 requests.
_PACE = 0.001


class _LateCalls(logging.Handler):
    """Counts the examples' reports of a call that reached them after their exit began."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "after exit began" in record.getMessage():
            self.count += 1


def run(seconds: float = 12.0, out: TextIO | None = None) -> int:
    """Run the demo; return the process exit code (0: every guarantee held)."""
    import sys

    out = out or sys.stdout

    def say(text: str = "") -> None:
        print(text, file=out, flush=True)

    late = _LateCalls()
    modlog = logging.getLogger("livemod.mods")
    modlog.addHandler(late)
    # The failed load and the leak are shown below; keep the library's own log quiet.
    logging.getLogger("livemod").propagate = False
    started = time.monotonic()
    served = [0] * 4
    failures: list[str] = []
    stop = threading.Event()
    loads = unloads = 0
    try:
        with livemod.Host(modpath=[_EXAMPLES], timeout=5.0) as host:
            host.modprobe("greet", greeting="hello")  # loads log first: greet depends on it
            host.insmod(os.path.join(_EXAMPLES, "counter.py"))
            loads += 3
            request = host.hook("request")
            say(f"livemod demo: host with modules {[s.name for s in host.lsmod()]}")

            def client(slot: int) -> None:
                while not stop.is_set():
                    try:
                        results = request(f"client-{slot}")
                    except Exception as exc:  # a call must never fail
                        failures.append(repr(exc))
                        return
                    if not results or not all(r is not None for r in results):
                        failures.append(f"bad results {results!r}")
                    served[slot] += 1
                    # Clients pause now and then, as real ones do. Pure-Python
                    # threads that never block can starve a thread waiting for the GIL
                    # (CPython's GIL hand-off is not fair), the unloading one included.
                    if served[slot] % 64 == 0:
                        time.sleep(_PACE)

            threads = [
                threading.Thread(target=client, args=(i,), name=f"client-{i}", daemon=True)
                for i in range(len(served))
            ]
            for t in threads:
                t.start()

            say("- 4 client threads call hook 'request' in a loop")
            cycles = 0
            deadline = started + max(seconds - 3.0, 1.0)
            while time.monotonic() < deadline:
                # One at a time, so the hook always has an implementation to answer with.
                host.rmmod("counter")
                host.insmod(os.path.join(_EXAMPLES, "counter.py"))
                host.rmmod("greet")
                host.modprobe("greet", greeting="hi" if cycles % 2 else "hello")
                unloads += 2
                loads += 2
                cycles += 1
            say(f"- {cycles} rmmod/insmod cycles of 'greet' and 'counter' under that load")

            before = [s.name for s in host.lsmod()]
            try:
                host.insmod(os.path.join(_EXAMPLES, "flaky.py"))
            except livemod.InitError as exc:
                say(f"- init failed half way: {exc}")
                same = [s.name for s in host.lsmod()] == before
                say(f"  lsmod unchanged: {same}; hook implementations: "
                    f"{', '.join(request.implementations())}")
                if not same or any(i.startswith("flaky") for i in request.implementations()):
                    failures.append("a failed init left something behind")

            with host.hold("greet"):
                try:
                    host.rmmod("greet")
                    failures.append("a held module was removed")
                except livemod.ModuleBusy as exc:
                    say(f"- unload refused while held: {exc}")

            host.insmod(os.path.join(_EXAMPLES, "leaky.py"))
            host.rmmod("leaky")
            loads += 1
            unloads += 1
            for leak in host.leaks():
                say(f"- leak found after unload: {leak.name} {leak.version}")
                for chain in leak.chains[:2]:
                    say(f"    {chain}")
            CALLBACKS.clear()
            say(f"  after the application drops its reference: leaks() = {host.leaks()}")

            stop.set()
            for t in threads:
                t.join(5.0)
            unloads += len(host.lsmod())
    finally:
        stop.set()
        modlog.removeHandler(late)
        logging.getLogger("livemod").propagate = True
    elapsed = time.monotonic() - started
    say()
    say(f"calls served:                     {sum(served)}")
    say(f"loads / unloads:                  {loads} / {unloads}")
    say(f"calls that reached an exited module: {late.count}")
    say(f"caller errors:                    {len(failures)}")
    say(f"time:                             {elapsed:.1f} s")
    for failure in failures[:5]:
        say(f"  ! {failure}")
    ok = late.count == 0 and not failures and sum(served) > 0
    say("demo: OK" if ok else "demo: FAILED")
    return 0 if ok else 1
