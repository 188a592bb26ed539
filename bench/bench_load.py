"""The cost of loading: insmod against a plain import, at scale, in memory, over cycles.

Run::

    python bench/bench_load.py                  # every part, full size (a few minutes)
    python bench/bench_load.py --quick          # smaller sizes (smoke test, ~20 s)
    python bench/bench_load.py --only trivial,cycles --rounds 21

Issue 12's targets for loading, each measured side by side in this one run:

* ``trivial``: ``host.insmod`` of a trivial module (a manifest and one function) against a
  plain import of the same kind of file from source (``spec_from_file_location`` +
  ``exec_module``, which compiles and writes ``__pycache__`` as ``import`` does; the script
  clears ``sys.dont_write_bytecode`` so that both write, whatever the environment says),
  both cold: every file is new (nothing cached: neither livemod's bytecode cache, which this script
  points at a fresh folder, nor its manifest cache, nor ``__pycache__``). Then warm: the
  bytecode cached by an earlier load (livemod's cache, or ``__pycache__`` written
  beforehand), as after a restart. Each round loads ``--batch`` files per candidate into a
  fresh host, in a rotated order; the sample is the batch's **thread CPU time**; the verdict
  is the median of per-round ratios. Target: insmod/import <= 1.5.
* ``scale``: 1,000 modules each add one implementation to the same hook of one host; the
  thread CPU time of each insmod is kept. Target: median of the last 100 within 1.3x of the
  first 100 (the median of 3 runs). A plain import of the same files in the same order is
  the control (the process grows for it too).
* ``memory``: growth of RSS and of ``tracemalloc`` per module loaded (bench_scale's module:
  a hook, two exports, a class), insmod against a plain import, each in a fresh child
  process, repeated and interleaved; medians. Target: insmod <= 9 KiB per module.
* ``cycles``: insmod + rmmod of one module, over and over, in one host whose event log is
  full after the warm-up. RSS (after ``gc.collect()``) is read every tenth of the run; the
  growth per 1,000 cycles is the slope of a least-squares line through those readings after
  the warm-up. Target: under 50 KiB per 1,000 cycles over 10,000 cycles. The hosts run with
  ``leak_check=False`` (a full collection per unload would take most of the run); pass
  ``--leak-check`` to run it anyway.

Printed: ``RATIO`` lines (label, n, value) and a ``TARGET`` line per target with ``met`` or
``MISSED``. Always exits 0 unless ``--check`` is given and a target is missed.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import os
import platform
import py_compile
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import livemod
from livemod import _manifest

TRIVIAL = '''\
"""Trivial module {i}."""

__livemod__ = {{"name": "t{tag}{i:05d}", "version": "1.0.0"}}


def answer(x):
    return x
'''

IMPL = '''\
"""Adds one implementation to the shared hook."""

__livemod__ = {{"name": "s{i:05d}", "version": "1.0.0"}}


def impl(x):
    return x + {i}


def init(mod):
    mod.hook("bench.shared").add(impl)
'''

#: bench_scale's module (a hook, two exports, a class): what issue 12's memory figures used.
#: Imported, not copied, so both benchmarks measure the same module.
MEMORY: str = importlib.import_module("bench_scale").MODULE


class Verdicts:
    def __init__(self) -> None:
        self.missed: list[str] = []

    def target(self, label: str, value: float, limit: float, shown: str) -> None:
        ok = value <= limit
        if not ok:
            self.missed.append(label)
        print(f"TARGET {label}: {shown} (target <= {limit:g}) {'met' if ok else 'MISSED'}",
              flush=True)


def write(folder: Path, template: str, names: range, **fmt: object) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in names:
        path = folder / f"m{i:05d}.py"
        path.write_text(template.format(i=i, factor=i % 7 + 1, group=i % 10, **fmt))
        paths.append(path)
    return paths


def plain_import(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def forget_imports(prefix: str) -> None:
    for key in [k for k in sys.modules if k.startswith(prefix)]:
        del sys.modules[key]


def iqr(values: list[float]) -> str:
    if len(values) < 4:
        return ""
    q = statistics.quantiles(values, n=4)
    return f"(IQR {q[0]:.2f}-{q[2]:.2f})"


# -------------------------------------------------------------------------- trivial


def bench_trivial(root: Path, rounds: int, batch: int, verdicts: Verdicts) -> None:
    per_round = ("insmod", "import", "insmod-warm", "import-warm")
    files: dict[str, list[Path]] = {}
    for k, key in enumerate(per_round):
        files[key] = write(root / key, TRIVIAL, range(rounds * batch), tag=k)
    for path in files["import-warm"]:
        py_compile.compile(str(path), doraise=True)  # __pycache__ written beforehand
    with livemod.Host(leak_check=False) as host:  # fills livemod's bytecode cache
        for path in files["insmod-warm"]:
            host.insmod(path)
    samples: dict[str, list[float]] = {key: [] for key in per_round}

    def run(key: str, chunk: list[Path], r: int) -> float:
        host = livemod.Host(leak_check=False) if key.startswith("insmod") else None
        _manifest._PARSED.clear()  # as in a fresh process: no manifest parsed yet
        gc.collect()
        start = time.thread_time()
        if host is not None:
            for path in chunk:
                host.insmod(path)
        else:
            for j, path in enumerate(chunk):
                plain_import(path, f"bench_{key[-1]}{r}_{j}")
        spent = time.thread_time() - start
        if host is not None:
            host.close()
        forget_imports("bench_")
        return spent / len(chunk)

    order = list(per_round)
    gc.disable()
    try:
        for r in range(rounds):
            order = order[1:] + order[:1]
            for key in order:
                samples[key].append(run(key, files[key][r * batch:(r + 1) * batch], r))
    finally:
        gc.enable()
    for cold, warm in (("insmod", "import"), ("insmod-warm", "import-warm")):
        ratios = [a / b for a, b in zip(samples[cold], samples[warm], strict=True)]
        med = statistics.median(ratios)
        what = "cold" if cold == "insmod" else "warm"
        print(f"  {what}: insmod {statistics.median(samples[cold]) * 1e6:.0f} us, import "
              f"{statistics.median(samples[warm]) * 1e6:.0f} us per module (thread CPU)")
        print(f"RATIO insmod/import {what} 1 {med:.2f}x {iqr(ratios)}", flush=True)
        verdicts.target(f"insmod/import, trivial module, {what}", med, 1.5, f"{med:.2f}x")


# ---------------------------------------------------------------------------- scale


def bench_scale(root: Path, count: int, repeats: int, verdicts: Verdicts) -> None:
    paths = write(root / "scale", IMPL, range(count))
    tenth = max(1, count // 10)
    found: dict[str, list[tuple[float, float]]] = {"insmod": [], "import": []}
    for r in range(repeats):  # a fresh host (and fresh import names) each time
        insmod: list[float] = []
        imports: list[float] = []
        gc.collect()  # the last run's modules: collected before, not during, this one
        # Each run as cold as the first: a bytecode cache filled by the last run would make
        # every insmod cheaper and the same growth a larger ratio.
        os.environ["LIVEMOD_CACHE_DIR"] = str(root / f"cache-scale-{r}")
        gc.disable()
        try:
            with livemod.Host(leak_check=False) as host:
                for i, path in enumerate(paths):
                    # Interleaved: the control import of the same file beside each insmod.
                    start = time.thread_time()
                    host.insmod(path)
                    insmod.append(time.thread_time() - start)
                    start = time.thread_time()
                    plain_import(path, f"bench_s{r}_{i}")
                    imports.append(time.thread_time() - start)
                calls = host.hook("bench.shared")(0)
                assert len(calls) == count, len(calls)
        finally:
            gc.enable()
            forget_imports("bench_")
        for label, times in (("insmod", insmod), ("import", imports)):
            found[label].append((statistics.median(times[:tenth]),
                                 statistics.median(times[-tenth:])))
    for label, pairs in found.items():
        ratios = [last / first for first, last in pairs]
        ratio = statistics.median(ratios)
        first = statistics.median(p[0] for p in pairs)
        last = statistics.median(p[1] for p in pairs)
        print(f"  {label}: first {tenth} {first * 1e6:.0f} us, last {tenth} {last * 1e6:.0f} us "
              f"(median, thread CPU); last/first of each run: "
              f"{', '.join(f'{x:.2f}' for x in ratios)}")
        print(f"RATIO {label} last/first {count} {ratio:.2f}x", flush=True)
        if label == "insmod":
            verdicts.target(f"insmod with {count} implementations on one hook, last/first "
                            f"{tenth}", ratio, 1.3, f"{ratio:.2f}x")


# --------------------------------------------------------------------------- memory


def memory_child(mode: str, metric: str, folder: str, n: int) -> None:
    """Print the growth of ``metric`` per module when ``mode`` loads n modules."""
    paths = sorted(Path(folder).glob("*.py"))[: n + 1]
    host = livemod.Host(leak_check=False)
    kept: list[ModuleType] = []

    def load(path: Path, i: int) -> None:
        if mode == "insmod":
            host.insmod(path)
        else:
            kept.append(plain_import(path, f"bench_m{i}"))

    load(paths[0], 0)  # the first load pulls in lazy imports: not a per-module cost
    gc.collect()
    if metric == "tracemalloc":
        tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0] if metric == "tracemalloc" else rss_bytes()
    for i, path in enumerate(paths[1:], start=1):
        load(path, i)
    gc.collect()
    after = tracemalloc.get_traced_memory()[0] if metric == "tracemalloc" else rss_bytes()
    print((after - before) / n)


def bench_memory(root: Path, n: int, repeats: int, verdicts: Verdicts) -> None:
    folder = root / "memory"
    write(folder, MEMORY, range(n + 1))
    with livemod.Host(leak_check=False) as host:  # the bytecode cache warm, as in a host
        for path in sorted(folder.glob("*.py")):  # that loads modules it loaded before
            host.insmod(path)
    for path in sorted(folder.glob("*.py")):
        py_compile.compile(str(path), doraise=True)  # and __pycache__ for the import
    found: dict[tuple[str, str], list[float]] = {}
    for _ in range(repeats):
        for metric in ("rss", "tracemalloc"):
            for mode in ("insmod", "import"):
                done = subprocess.run(
                    [sys.executable, __file__, "--memory-child", mode, metric, str(folder),
                     str(n)], capture_output=True, text=True, check=True, timeout=600,
                    env=dict(os.environ))
                found.setdefault((mode, metric), []).append(float(done.stdout.split()[-1]))
    for metric in ("rss", "tracemalloc"):
        ins = statistics.median(found[("insmod", metric)]) / 1024
        imp = statistics.median(found[("import", metric)]) / 1024
        print(f"  {metric}: insmod {ins:.1f} KiB, import {imp:.1f} KiB per module "
              f"(median of {repeats}, {n} modules)")
        print(f"RATIO memory insmod/import {metric} {n} {ins / imp:.2f}x", flush=True)
        verdicts.target(f"memory per module, insmod ({metric})", ins, 9.0, f"{ins:.1f} KiB")


def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# --------------------------------------------------------------------------- cycles


def bench_cycles(root: Path, cycles: int, leak_check: bool, verdicts: Verdicts) -> None:
    (path,) = write(root / "cycles", MEMORY, range(1))
    warmup = max(100, min(1000, cycles // 10))
    readings: list[tuple[int, int]] = []
    with livemod.Host(leak_check=leak_check) as host:
        hook = host.hook("bench.scale.0")
        start = time.thread_time()
        for i in range(warmup + cycles):
            host.insmod(path)
            hook(1)
            host.rmmod("m00000")
            if i >= warmup - 1 and (i - warmup + 1) % max(1, cycles // 10) == 0:
                gc.collect()
                readings.append((i - warmup + 1, rss_bytes()))
        spent = time.thread_time() - start
        events = len(host.events())
    xs = [float(x) for x, _ in readings]
    ys = [float(y) for _, y in readings]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    slope = (sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
             / sum((x - mx) ** 2 for x in xs))
    per_k = slope * 1000 / 1024
    print(f"  {warmup} warm-up + {cycles} cycles, {spent / (warmup + cycles) * 1e3:.2f} ms "
          f"CPU each; event log holds {events} events; RSS "
          f"{readings[0][1] / 2**20:.1f} -> {readings[-1][1] / 2**20:.1f} MiB")
    print(f"RATIO cycle RSS KiB/1000 {cycles} {per_k:.1f}", flush=True)
    verdicts.target(f"RSS growth per 1,000 load/unload cycles over {cycles}", per_k, 50.0,
                    f"{per_k:.1f} KiB")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes (smoke test)")
    parser.add_argument("--only", default="trivial,scale,memory,cycles",
                        help="comma-separated parts to run")
    parser.add_argument("--rounds", type=int, help="rounds of the trivial part (default 15)")
    parser.add_argument("--batch", type=int, help="modules per round and candidate (20)")
    parser.add_argument("--scale", type=int, help="modules on one hook (default 1000)")
    parser.add_argument("--cycles", type=int, help="load/unload cycles (default 10000)")
    parser.add_argument("--leak-check", action="store_true", help="cycles with the leak check")
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    parser.add_argument("--memory-child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child:
        mode, metric, folder, n = args.memory_child
        memory_child(mode, metric, folder, int(n))
        return 0
    quick = args.quick
    rounds = args.rounds or (5 if quick else 15)
    batch = args.batch or (10 if quick else 20)
    scale = args.scale or (100 if quick else 1000)
    cycles = args.cycles or (200 if quick else 10_000)
    parts = set(args.only.split(","))
    print(f"bench_load: Python {platform.python_version()} on {platform.platform()}, "
          f"{os.cpu_count()} CPUs")
    verdicts = Verdicts()
    # Both candidates write their bytecode, as the parts say, even where the environment
    # says not to (PYTHONDONTWRITEBYTECODE=1, which livemod's cache honours as import does):
    # otherwise a cold import would skip the write that a cold insmod pays for.
    sys.dont_write_bytecode = False
    with tempfile.TemporaryDirectory(prefix="livemod-load-") as tmp:
        root = Path(tmp)
        os.environ["LIVEMOD_CACHE_DIR"] = str(root / "cache")  # a cold bytecode cache
        steps: list[tuple[str, Callable[[], None]]] = [
            ("trivial", lambda: bench_trivial(root, rounds, batch, verdicts)),
            ("scale", lambda: bench_scale(root, scale, 1 if quick else 3, verdicts)),
            ("memory", lambda: bench_memory(root, 50 if quick else 400, 1 if quick else 3,
                                            verdicts)),
            ("cycles", lambda: bench_cycles(root, cycles, args.leak_check, verdicts)),
        ]
        for name, step in steps:
            if name in parts:
                print(f"{name}:", flush=True)
                step()
    print("RESULT: " + ("every target met" if not verdicts.missed
                        else "MISSED: " + "; ".join(verdicts.missed)))
    return 1 if args.check and verdicts.missed else 0


if __name__ == "__main__":
    sys.exit(main())
