"""Hook dispatch cost, side by side: ``hook(x)`` vs a hand-written loop vs pluggy vs blinker.

Run::

    python bench/bench_dispatch.py            # full run (10-20 seconds)
    python bench/bench_dispatch.py --quick    # a few seconds, for smoke tests
    python bench/bench_dispatch.py --check    # exit 1 if a must-threshold fails
    python bench/bench_dispatch.py --pyperf   # the same candidates through pyperf, if installed

For n = 1 and n = 10 implementations of one hook, every candidate calls ``n`` trivial
functions ``def impl(x): return x`` and collects their results:

* ``hook``: ``hook(x)`` on a ``livemod.Host`` into which n real module files (written to a
  temporary folder) were loaded, each registering its ``impl`` on the hook and exporting it;
* ``loop``: ``[f(x) for f in impls]`` inline in the timed statement, ``impls`` being the very
  same function objects (taken from the modules' exports);
* ``pluggy``: ``call(x=x)`` with ``call = pm.hook.h`` on a PluginManager with one hookspec
  and n plugins with a hookimpl each;
* ``blinker``: ``send(x)`` with ``send = signal.send`` on a Signal with n (strong) receivers.

All candidates run in one process, interleaved: each round times every candidate once (in
an order rotated per round), so a noisy neighbour slows all of them alike. Per candidate the
table shows the median and minimum ns per call (informative only: absolute times depend on
the machine). The verdicts use ratios computed *within* each round, then the median over
rounds, which cancels most of the drift of a shared machine.

Must (issue 2): hook/loop <= 2.0 at n=10 and <= 4.5 at n=1; pluggy/hook >= 4.0 at n=10.
Aim: hook/loop <= 1.3 at n=10.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import platform
import statistics
import sys
import tempfile
import textwrap
import timeit
import types
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import livemod

SIZES = (1, 10)
HOOK = "bench.dispatch"


@dataclass(frozen=True)
class Threshold:
    label: str
    num: str
    den: str
    n: int
    limit: float
    at_most: bool  # True: num/den <= limit; False: num/den >= limit
    must: bool

    def holds(self, ratio: float) -> bool:
        return ratio <= self.limit if self.at_most else ratio >= self.limit


THRESHOLDS = (
    Threshold("hook/loop", "hook", "loop", 1, 4.5, True, True),
    Threshold("hook/loop", "hook", "loop", 10, 2.0, True, True),
    Threshold("hook/loop", "hook", "loop", 10, 1.3, True, False),
    Threshold("pluggy/hook", "pluggy", "hook", 10, 4.0, False, True),
)
# Every ratio printed, in order: (label, numerator, denominator, n); a row without a
# threshold is informative.
RATIOS = (
    ("hook/loop", "hook", "loop", 1),
    ("hook/loop", "hook", "loop", 10),
    ("pluggy/hook", "pluggy", "hook", 1),
    ("pluggy/hook", "pluggy", "hook", 10),
    ("blinker/hook", "blinker", "hook", 1),
    ("blinker/hook", "blinker", "hook", 10),
)


@dataclass
class Candidate:
    name: str
    n: int
    stmt: str
    env: dict[str, Any]
    loops: int = 0
    samples: list[float] = field(default_factory=list)  # ns per call, one per round

    @property
    def key(self) -> tuple[str, int]:
        return (self.name, self.n)


# ----------------------------------------------------------------------------- set-up


MODULE_SOURCE = '''\
"""A trivial hook implementation for the dispatch benchmark."""
__livemod__ = {{"name": "{name}", "version": "1.0.0"}}


def impl(x):
    return x


def init(mod):
    mod.hook({hook!r}).add(impl)
    mod.export("impl", impl)
'''


def build_livemod(stack: ExitStack, n: int) -> tuple[Callable[..., list[Any]], list[Any]]:
    """A host with ``n`` module files loaded on one hook; returns (hook, the impls)."""
    folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="livemod-bench-")))
    host = stack.enter_context(livemod.Host(leak_check=False))
    hook_name = f"{HOOK}.{n}"
    impls = []
    for i in range(n):
        path = folder / f"impl_{n}_{i}.py"
        path.write_text(MODULE_SOURCE.format(name=f"impl_{n}_{i}", hook=hook_name))
        impls.append(host.insmod(path).exports["impl"])
    hook = host.hook(hook_name)
    assert len(hook) == n, hook
    assert hook(7) == [7] * n
    return hook, impls


def _optional(name: str) -> types.ModuleType | None:
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def _make_impl() -> Callable[[Any], Any]:
    def impl(x: Any) -> Any:
        return x

    return impl


def build_pluggy(pluggy: Any, n: int) -> Callable[..., list[Any]]:
    spec: Callable[[Callable[..., Any]], Callable[..., Any]] = pluggy.HookspecMarker("bench")
    mark = pluggy.HookimplMarker("bench")

    class Spec:
        @spec
        def h(self, x: Any) -> Any: ...

    pm = pluggy.PluginManager("bench")
    pm.add_hookspecs(Spec)
    for i in range(n):
        # A plugin object exposing a plain function (no bound method), like a plugin module.
        pm.register(types.SimpleNamespace(h=mark(_make_impl())), name=f"p{i}")
    call: Callable[..., list[Any]] = pm.hook.h
    assert call(x=7) == [7] * n
    return call


def build_blinker(blinker: Any, n: int) -> Callable[..., list[Any]]:
    signal = blinker.Signal()
    for _ in range(n):
        signal.connect(_make_impl(), weak=False)
    send: Callable[..., list[Any]] = signal.send
    assert [r for _, r in send(7)] == [7] * n
    return send


def build_candidates(stack: ExitStack) -> tuple[list[Candidate], list[str]]:
    notes = []
    pluggy = _optional("pluggy")
    blinker = _optional("blinker")
    if pluggy is None:
        notes.append("pluggy is not installed: its column is skipped (pip install pluggy)")
    if blinker is None:
        notes.append("blinker is not installed: its column is skipped (pip install blinker)")
    out: list[Candidate] = []
    for n in SIZES:
        hook, impls = build_livemod(stack, n)
        out.append(Candidate("hook", n, "hook(x)", {"hook": hook, "x": 1}))
        out.append(Candidate("loop", n, "[f(x) for f in impls]", {"impls": impls, "x": 1}))
        if pluggy is not None:
            out.append(Candidate("pluggy", n, "call(x=x)", {"call": build_pluggy(pluggy, n),
                                                             "x": 1}))
        if blinker is not None:
            out.append(Candidate("blinker", n, "send(x)", {"send": build_blinker(blinker, n),
                                                           "x": 1}))
    return out, notes


# ---------------------------------------------------------------------------- timing


@contextmanager
def gc_disabled() -> Iterator[None]:
    # timeit does this per sample too; done around the whole run so collections triggered by
    # one candidate's garbage never land in another candidate's sample.
    was = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def calibrate(c: Candidate, target: float) -> None:
    timer = timeit.Timer(c.stmt, globals=c.env)
    number, elapsed = timer.autorange()
    c.loops = max(1, int(number * target / elapsed))


def run_rounds(cands: list[Candidate], rounds: int) -> None:
    timers = [timeit.Timer(c.stmt, globals=c.env) for c in cands]
    for r in range(rounds):
        shift = r % len(cands)
        order = list(range(len(cands)))
        order = order[shift:] + order[:shift]
        if r % 2:
            order.reverse()
        for i in order:
            c = cands[i]
            c.samples.append(timers[i].timeit(c.loops) / c.loops * 1e9)


def round_ratios(cands: list[Candidate], num: str, den: str, n: int) -> list[float] | None:
    by = {c.key: c for c in cands}
    a, b = by.get((num, n)), by.get((den, n))
    if a is None or b is None:
        return None
    return [x / y for x, y in zip(a.samples, b.samples, strict=True)]


# --------------------------------------------------------------------------- reporting


def report(cands: list[Candidate], notes: list[str], header: str) -> bool:
    """Print the tables; return True when every must-threshold holds."""
    print(header)
    for note in notes:
        print(f"note: {note}")
    print()
    print(f"{'candidate':<10}{'n':>4}{'median ns':>12}{'min ns':>10}{'loops':>10}")
    for c in cands:
        print(f"{c.name:<10}{c.n:>4}{statistics.median(c.samples):>12.1f}"
              f"{min(c.samples):>10.1f}{c.loops:>10}")
    print("(per-call times are informative only; the verdicts use the ratios below)")
    print()
    print(f"{'ratio':<19}{'n':>3}{'median':>9}{'IQR':>17}{'of mins':>9}  verdict")
    ok = True
    by = {c.key: c for c in cands}
    for label, num, den, n in RATIOS:
        ratios = round_ratios(cands, num, den, n)
        if ratios is None:
            missing = num if (num, n) not in by else den
            print(f"RATIO {label:<13}{n:>3}  skipped ({missing} not installed)")
            continue
        med = statistics.median(ratios)
        q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [med, med, med]
        of_mins = min(by[(num, n)].samples) / min(by[(den, n)].samples)
        verdicts = []
        for t in THRESHOLDS:
            if (t.label, t.n) != (label, n):
                continue
            passed = t.holds(med)
            op = "<=" if t.at_most else ">="
            verdicts.append(f"{'PASS' if passed else 'FAIL'} ({'must' if t.must else 'aim'} "
                            f"{op} {t.limit:g})")
            if t.must and not passed:
                ok = False
        print(f"RATIO {label:<13}{n:>3}{med:>8.2f}x  [{q[0]:5.2f} .. {q[2]:5.2f}]"
              f"{of_mins:>8.2f}x  {', '.join(verdicts) or '(info)'}")
    print()
    print("RESULT: " + ("all must-thresholds PASS" if ok else "a must-threshold FAILED"))
    return ok


def header_line(rounds: int, target: float, mode: str) -> str:
    return (f"livemod dispatch benchmark ({mode}): Python {platform.python_version()} "
            f"({platform.python_implementation()}, {sys.platform}), livemod "
            f"{getattr(livemod, '__version__', '?')}, {rounds} rounds, ~{target * 1e3:.0f} ms "
            f"per sample")


def main_interleaved(args: argparse.Namespace) -> int:
    rounds = args.rounds or (7 if args.quick else 41)
    target = args.sample_ms / 1e3 if args.sample_ms else (0.004 if args.quick else 0.02)
    with ExitStack() as stack:
        cands, notes = build_candidates(stack)
        with gc_disabled():
            for c in cands:
                calibrate(c, target)
            run_rounds(cands, 1)  # warm-up round, discarded
            for c in cands:
                c.samples.clear()
            run_rounds(cands, rounds)
        ok = report(cands, notes, header_line(rounds, target, "interleaved timeit"))
    return 1 if (args.check and not ok) else 0


# ------------------------------------------------------------------------------ pyperf


def main_pyperf(args: argparse.Namespace, rest: list[str]) -> int:
    """Each candidate as a pyperf benchmark (worker processes; not interleaved)."""
    try:
        import pyperf  # type: ignore[import-untyped, import-not-found, unused-ignore]
    except ImportError:
        print("pyperf is not installed (pip install pyperf); run without --pyperf")
        return 2

    def add_cmdline_args(cmd: list[str], _args: Any) -> None:
        cmd.append("--pyperf")

    if args.quick:
        rest.append("--fast")
    sys.argv = [sys.argv[0], *rest]
    runner = pyperf.Runner(add_cmdline_args=add_cmdline_args)
    runner.argparser.add_argument("--pyperf", action="store_true")
    worker = bool(runner.parse_args().worker)
    stack = ExitStack()
    cands, notes = build_candidates(stack)
    results: dict[tuple[str, int], float] = {}
    for c in cands:
        timer = timeit.Timer(c.stmt, globals=c.env)
        bench = runner.bench_time_func(f"{c.name}-{c.n}", _pyperf_func(timer))
        if bench is not None and not worker:
            results[c.key] = bench.median() * 1e9
    stack.close()
    if worker or len(results) < len(cands):
        return 0  # a worker process, or a run that produced no summary
    print()
    print(f"pyperf summary, Python {platform.python_version()} (sequential, not interleaved)")
    for note in notes:
        print(f"note: {note}")
    for t in THRESHOLDS:
        if (t.num, t.n) in results and (t.den, t.n) in results:
            ratio = results[(t.num, t.n)] / results[(t.den, t.n)]
            verdict = "PASS" if t.holds(ratio) else "FAIL"
            print(f"RATIO {t.label:<12}{t.n:>4}{ratio:>8.2f}x  {verdict} "
                  f"({'must' if t.must else 'aim'} {'<=' if t.at_most else '>='} {t.limit:g})")
    return 0


def _pyperf_func(timer: timeit.Timer) -> Callable[[int], float]:
    def time_func(loops: int) -> float:
        return timer.timeit(loops)

    return time_func


# -------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        description=textwrap.dedent(__doc__ or "").split("\n\n")[0],
    )
    parser.add_argument("--quick", action="store_true", help="few short rounds (smoke test)")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if a must-threshold fails (default: always exit 0)")
    parser.add_argument("--pyperf", action="store_true",
                        help="use pyperf (other arguments are passed to pyperf.Runner)")
    parser.add_argument("--rounds", type=int, default=0, help="rounds (default 41; quick 7)")
    parser.add_argument("--sample-ms", type=float, default=0.0,
                        help="target ms per sample (default 20; quick 4)")
    return parser.parse_known_args(argv)


def main(argv: list[str] | None = None) -> int:
    args, rest = parse_args(argv)
    if args.pyperf:
        return main_pyperf(args, rest)
    if rest:
        print(f"unknown arguments: {' '.join(rest)}", file=sys.stderr)
        return 2
    return main_interleaved(args)


if __name__ == "__main__":
    sys.exit(main())
