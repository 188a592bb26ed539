"""Reloading a module with managed threads while threads call it (issue 11).

Run::

    python bench/bench_reload.py           # 60 reloads per configuration, 5 rounds
    python bench/bench_reload.py --quick   # 6 reloads per configuration (smoke test)

The module is the issue's shape: two managed threads that wait on ``mod.stopping`` and one
hook implementation. Each reload is ``host.replace("busy2")`` -- the module's own file read
again, as ``livemod watch`` does on every save. Configurations: 0 (idle) or 8 threads
calling the hook in tight loops (CPU-bound, never blocking), on a ``Host()`` (leak check
on: a full ``gc.collect()`` per reload) and a ``Host(leak_check=False)``; interleaved in
rounds, the callers started before and stopped after each block of reloads.

Times from the call's start: ``serving`` (v2 LIVE: the switch is done and calls reach v2),
``GONE`` (v1's GONE notice: drained, exit and managed undo run, its threads joined) and
``call`` (replace returned: v1's leak check done and v2's threads all started). Ratios are
printed side by side (``RATIO`` lines); the target is the issue's: under 8 callers each
reload completes in well under a second (``TARGET``: p95 below 1 s). The script always
exits 0; nothing here is asserted.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import livemod

CALLERS = 8

MODULE = '''\
"""Two managed threads and a hook (issue 11's threaded reload)."""
__livemod__ = {"name": "busy2", "version": "1.0.0"}


def handle(x):
    return x + 1


def init(mod):
    mod.hook("busy2.h").add(handle)
    mod.thread(lambda: mod.stopping.wait(), name="busy2-a")
    mod.thread(lambda: mod.stopping.wait(), name="busy2-b")
'''


@dataclass
class Config:
    callers: int
    leak_check: bool
    host: livemod.Host
    serving: list[float] = field(default_factory=list)
    gone: list[float] = field(default_factory=list)
    call: list[float] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"callers={self.callers} leak_check={'on' if self.leak_check else 'off'}"


class Callers:
    """Threads calling ``hook`` in a tight loop until stopped."""

    def __init__(self, hook: livemod.Hook, n: int) -> None:
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(hook,), daemon=True,
                                         name=f"caller-{i}") for i in range(n)]
        for t in self.threads:
            t.start()

    def _run(self, hook: livemod.Hook) -> None:
        stop = self.stop
        while not stop.is_set():
            hook(1)

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(10)


def block(cfg: Config, reloads: int, marks: dict[str, float]) -> None:
    callers = Callers(cfg.host.hook("busy2.h"), cfg.callers)
    try:
        for _ in range(reloads):
            marks.clear()
            t0 = time.perf_counter()
            cfg.host.replace("busy2")
            t1 = time.perf_counter()
            cfg.serving.append(marks.get("LIVE", t1) - t0)
            cfg.gone.append(marks.get("GONE", t1) - t0)
            cfg.call.append(t1 - t0)
    finally:
        callers.close()


def p95(values: list[float]) -> float:
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=20, method="inclusive")[18]


def ms(x: float) -> str:
    return f"{x * 1e3:.1f}"


def report(configs: list[Config], reloads: int, rounds: int) -> None:
    print(f"livemod threaded reload benchmark: Python {platform.python_version()} "
          f"({platform.python_implementation()}, {sys.platform}), {reloads} reloads per "
          f"configuration in {rounds} rounds, switch interval "
          f"{sys.getswitchinterval() * 1e3:g} ms")
    print()
    print(f"{'configuration (ms from the call)':<34}{'serving':>16}{'GONE':>16}{'call':>16}"
          f"{'max':>8}")
    print(f"{'':<34}{'median / p95':>16}{'median / p95':>16}{'median / p95':>16}")
    for c in configs:
        cols = [f"{ms(statistics.median(v))} / {ms(p95(v))}" for v in (c.serving, c.gone,
                                                                        c.call)]
        print(f"{c.label:<34}{cols[0]:>16}{cols[1]:>16}{cols[2]:>16}{ms(max(c.call)):>8}")
    print()
    by = {(c.callers, c.leak_check): c for c in configs}
    for lc in (True, False):
        busy, idle = by[(CALLERS, lc)].call, by[(0, lc)].call
        print(f"RATIO reload busy/idle {CALLERS} leak_check={'on' if lc else 'off'}: median "
              f"{statistics.median(busy) / statistics.median(idle):.2f}x, p95 "
              f"{p95(busy) / p95(idle):.2f}x")
    for n in (0, CALLERS):
        on, off = by[(n, True)].call, by[(n, False)].call
        print(f"RATIO reload on/off {n} callers: median "
              f"{statistics.median(on) / statistics.median(off):.2f}x, p95 "
              f"{p95(on) / p95(off):.2f}x (the leak check's full collection)")
    print()
    busy = by[(CALLERS, True)].call
    tail = p95(busy)
    print(f"TARGET reload under {CALLERS} callers, leak check on: median "
          f"{ms(statistics.median(busy))} ms, p95 {ms(tail)} ms "
          f"{'PASS' if tail < 1.0 else 'MISS'} (p95 < 1000 ms)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="6 reloads per configuration")
    parser.add_argument("--reloads", type=int, default=0, help="reloads per configuration")
    parser.add_argument("--rounds", type=int, default=0, help="interleaving rounds")
    args = parser.parse_args(argv)
    reloads = args.reloads or (6 if args.quick else 60)
    rounds = args.rounds or (2 if args.quick else 5)
    per_round = [reloads // rounds + (1 if r < reloads % rounds else 0) for r in range(rounds)]

    with ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="livemod-reload-")))
        configs: list[Config] = []
        marks: dict[str, float] = {}
        for leak_check in (True, False):
            host = stack.enter_context(livemod.Host(leak_check=leak_check, timeout=30.0))
            file = folder / ("on" if leak_check else "off") / "busy2.py"
            file.parent.mkdir()
            file.write_text(MODULE)
            host.insmod(file)

            def on_change(name: str, old: object, new: livemod.State,
                          marks: dict[str, float] = marks) -> None:
                if name == "busy2" and new in (livemod.State.LIVE, livemod.State.GONE):
                    marks.setdefault(new.name, time.perf_counter())

            host.subscribe(on_change)
            configs += [Config(n, leak_check, host) for n in (0, CALLERS)]
        for cfg in configs:  # warm-up, discarded
            block(cfg, 1, marks)
            cfg.serving.clear()
            cfg.gone.clear()
            cfg.call.clear()
        for r, k in enumerate(per_round):
            for cfg in configs[r % len(configs):] + configs[:r % len(configs)]:
                block(cfg, k, marks)
        report(configs, reloads, rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
