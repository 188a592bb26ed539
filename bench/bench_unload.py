"""Unload latency: ``rmmod`` of a module with a trivial exit, while 8 threads hammer its hook.

Run::

    python bench/bench_unload.py           # 200 cycles per configuration (a minute or two)
    python bench/bench_unload.py --quick   # 30 cycles per configuration (smoke test)

A module ``victim`` (trivial ``exit``) registers one implementation on a hook on which 1 or
10 implementations from other modules are already live. Each cycle loads the victim, lets
the threads call the hook for a moment, then times its removal:

* ``GOING``: rmmod start to the GOING notification (unpublished: no new way in);
* ``GONE``:  rmmod start to the GONE notification (quiescence waited for, exit and managed
  undo run, out of the table) -- the latency the issue asks for;
* ``rmmod``: the whole ``rmmod`` call. With the leak check on, the host runs a full
  ``gc.collect()`` *after* announcing GONE, so that collection shows up here and not in GONE.

Every configuration runs with 8 threads hammering the hook (a tight loop of ``hook(1)``) and
with the same 8 threads idle (parked on an event), on a ``Host()`` and on a
``Host(leak_check=False)``. Configurations are interleaved in rounds so that drift on a
shared machine hits all of them alike. Times are informative only; the ratios (hammered vs
idle, leak check on vs off) are what to compare across machines. The script always exits 0
(there is no threshold for unload latency).
"""

from __future__ import annotations

import argparse
import gc
import itertools
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import livemod

THREADS = 8
BATCH = 20  # hook calls between two looks at the pause flag
SIZES = (1, 10)

VICTIM_SOURCE = '''\
"""The module unloaded by the benchmark: one implementation, a trivial exit."""
__livemod__ = {
    "name": "victim", "version": "1.0.0",
    "params": {"hook": {"type": "str", "default": "unload.1", "doc": "hook to register on"}},
}


def impl(x):
    return x


def init(mod):
    mod.hook(mod.params.hook).add(impl)


def exit(mod):
    pass
'''

OTHER_SOURCE = '''\
"""A neighbour: one more implementation on the hook."""
__livemod__ = {{"name": "{name}", "version": "1.0.0"}}


def impl(x):
    return x


def init(mod):
    mod.hook({hook!r}).add(impl)
'''


@dataclass
class Config:
    n: int  # implementations from other modules on the hook
    hammer: bool
    leak_check: bool
    host: livemod.Host
    going: list[float] = field(default_factory=list)  # seconds from rmmod start
    gone: list[float] = field(default_factory=list)
    call: list[float] = field(default_factory=list)
    calls_served: int = 0
    leaked: int = 0  # unloads the leak check reported as 'module-leaked'
    hammer_seconds: float = 0.0

    @property
    def label(self) -> str:
        return (f"n={self.n:<2} {'hammer' if self.hammer else 'idle':<6} "
                f"leak_check={'on' if self.leak_check else 'off'}")


class Hammer:
    """8 threads calling ``target`` in a tight loop while ``go`` is set, parked otherwise."""

    def __init__(self, threads: int) -> None:
        self.go = threading.Event()
        self.stop = False
        self.target: Callable[[Any], object] = lambda x: None
        self.active = [False] * threads
        self.counts = [0] * threads
        self.threads = [threading.Thread(target=self._run, args=(i,), name=f"hammer-{i}",
                                         daemon=True) for i in range(threads)]
        for t in self.threads:
            t.start()

    def _run(self, i: int) -> None:
        while not self.stop:
            self.go.wait()
            # Announce, then re-check: pause() cannot miss a batch that is about to start.
            self.active[i] = True
            if self.go.is_set() and not self.stop:
                hook = self.target
                for _ in range(BATCH):
                    hook(1)
                self.counts[i] += BATCH
            self.active[i] = False

    def start(self, target: Callable[[Any], object]) -> None:
        self.target = target
        self.go.set()

    def pause(self) -> None:
        self.go.clear()
        while any(self.active):
            time.sleep(0.0005)

    def calls(self) -> int:
        return sum(self.counts)

    def close(self) -> None:
        self.stop = True
        self.go.set()
        for t in self.threads:
            t.join(timeout=10)


def write_modules(folder: Path) -> tuple[Path, dict[int, list[Path]]]:
    victim = folder / "victim.py"
    victim.write_text(VICTIM_SOURCE)
    others: dict[int, list[Path]] = {}
    for n in SIZES:
        others[n] = []
        for i in range(n):
            path = folder / f"other_{n}_{i}.py"
            path.write_text(OTHER_SOURCE.format(name=f"other_{n}_{i}", hook=f"unload.{n}"))
            others[n].append(path)
    return victim, others


def run_cycle(cfg: Config, victim: Path, hammer: Hammer, marks: dict[str, float],
              settle: float) -> None:
    hook_name = f"unload.{cfg.n}"
    cfg.host.insmod(victim, hook=hook_name)
    if cfg.hammer:
        hammer.start(cfg.host.hook(hook_name))
        before, since = hammer.calls(), time.perf_counter()
    time.sleep(settle)  # let calls land on the snapshot that includes the victim
    marks.clear()
    taints = len(cfg.host.tainted)
    t0 = time.perf_counter()
    cfg.host.rmmod("victim")
    t1 = time.perf_counter()
    cfg.leaked += sum(1 for t in cfg.host.tainted[taints:] if t.flag == "module-leaked")
    if cfg.hammer:
        hammer.pause()
        cfg.calls_served += hammer.calls() - before
        cfg.hammer_seconds += time.perf_counter() - since
    cfg.going.append(marks["GOING"] - t0)
    cfg.gone.append(marks["GONE"] - t0)
    cfg.call.append(t1 - t0)


def p95(values: list[float]) -> float:
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=20, method="inclusive")[18]


def ms(x: float) -> str:
    return f"{x * 1e3:8.2f}"


def report(configs: list[Config], cycles: int, rounds: int) -> None:
    print(f"livemod unload benchmark: Python {platform.python_version()} "
          f"({platform.python_implementation()}, {sys.platform}), livemod "
          f"{getattr(livemod, '__version__', '?')}, {cycles} cycles per configuration in "
          f"{rounds} rounds, {THREADS} threads, switch interval "
          f"{sys.getswitchinterval() * 1e3:g} ms")
    print()
    print(f"{'configuration (ms from rmmod start)':<37}{'GOING med':>10}{'GONE med':>10}"
          f"{'GONE p95':>10}{'>1ms':>6}{'rmmod med':>10}{'rmmod p95':>10}{'calls/s':>11}"
          f"{'leaked':>8}")
    for c in configs:
        rate = f"{c.calls_served / c.hammer_seconds:>11.0f}" if c.hammer else f"{'-':>11}"
        print(f"{c.label:<37}{ms(statistics.median(c.going)):>10}"
              f"{ms(statistics.median(c.gone)):>10}{ms(p95(c.gone)):>10}"
              f"{sum(g > 1e-3 for g in c.gone) / len(c.gone):>6.0%}"
              f"{ms(statistics.median(c.call)):>10}{ms(p95(c.call)):>10}{rate}"
              f"{c.leaked if c.leak_check else '-':>8}")
    print("(absolute times are informative only; compare the ratios. '>1ms': share of cycles "
          "whose GONE took over 1 ms;\n 'leaked': unloads the leak check reported as "
          "'module-leaked', which taints the host)")
    print()
    by = {(c.n, c.hammer, c.leak_check): c for c in configs}
    print(f"{'ratio':<26}{'n':>3}{'leak_check':>12}{'median':>9}{'p95':>9}")
    for lc, n in itertools.product((True, False), SIZES):
        busy, idle = by[(n, True, lc)], by[(n, False, lc)]
        for what, a, b in (("GONE", busy.gone, idle.gone), ("rmmod", busy.call, idle.call)):
            print(f"RATIO {what + ' hammer/idle':<20}{n:>3}{'on' if lc else 'off':>12}"
                  f"{statistics.median(a) / statistics.median(b):>8.2f}x"
                  f"{p95(a) / p95(b):>8.2f}x")
    print()
    print("leak check share of the rmmod call (median rmmod, leak_check on vs off):")
    for hammer, n in itertools.product((False, True), SIZES):
        on, off = by[(n, hammer, True)], by[(n, hammer, False)]
        m_on, m_off = statistics.median(on.call), statistics.median(off.call)
        share = (m_on - m_off) / m_on if m_on > 0 else 0.0
        print(f"RATIO {'rmmod on/off':<20}{n:>3}{'hammer' if hammer else 'idle':>12}"
              f"{m_on / m_off:>8.2f}x   on {ms(m_on).strip()} ms, off {ms(m_off).strip()} ms, "
              f"share {share:.0%}")
    print()
    for hammer in (False, True):
        runs = [c for c in configs if c.leak_check and c.hammer is hammer]
        leaked, total = sum(c.leaked for c in runs), sum(len(c.call) for c in runs)
        print(f"leak check ({'hammered' if hammer else 'idle'}): {leaked} of {total} unloads "
              f"reported 'module-leaked' ({leaked / total:.0%})")
    alive = sum(len(h.leaks()) for h in {id(c.host): c.host for c in configs}.values())
    print(f"modules still alive at the end per host.leaks(): {alive}")

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="30 cycles per configuration")
    parser.add_argument("--cycles", type=int, default=0, help="cycles per configuration")
    parser.add_argument("--rounds", type=int, default=0, help="interleaving rounds")
    parser.add_argument("--settle-ms", type=float, default=2.0,
                        help="ms the threads call the hook before each rmmod (default 2)")
    parser.add_argument("--switch-interval-ms", type=float, default=0.0,
                        help="sys.setswitchinterval for the run (default: leave it)")
    args = parser.parse_args(argv)
    if args.switch_interval_ms:
        sys.setswitchinterval(args.switch_interval_ms / 1e3)
    cycles = args.cycles or (30 if args.quick else 200)
    rounds = args.rounds or (3 if args.quick else 10)
    per_round = [cycles // rounds + (1 if r < cycles % rounds else 0) for r in range(rounds)]

    with ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="livemod-unload-")))
        victim, others = write_modules(folder)
        marks: dict[str, float] = {}
        configs: list[Config] = []
        for leak_check in (True, False):
            host = stack.enter_context(livemod.Host(leak_check=leak_check))

            def on_change(name: str, old: object, new: livemod.State,
                          marks: dict[str, float] = marks) -> None:
                if name == "victim" and new in (livemod.State.GOING, livemod.State.GONE):
                    marks[new.name] = time.perf_counter()

            host.subscribe(on_change)
            for n in SIZES:
                for path in others[n]:
                    host.insmod(path)
                configs += [Config(n, hammer, leak_check, host) for hammer in (False, True)]
        hammer = Hammer(THREADS)
        stack.callback(hammer.close)
        gc.collect()
        for cfg in configs:  # warm-up, discarded
            run_cycle(cfg, victim, hammer, marks, args.settle_ms / 1e3)
            cfg.going.clear()
            cfg.gone.clear()
            cfg.call.clear()
            cfg.calls_served, cfg.hammer_seconds, cfg.leaked = 0, 0.0, 0
        for r, k in enumerate(per_round):
            order = configs[r % len(configs):] + configs[:r % len(configs)]
            for cfg in order:
                for _ in range(k):
                    run_cycle(cfg, victim, hammer, marks, args.settle_ms / 1e3)
        report(configs, cycles, rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
