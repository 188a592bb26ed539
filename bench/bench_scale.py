"""Scale: a modpath of 10,000 module files, then 1,000 modules loaded into one host.

Run::

    python bench/bench_scale.py           # 10,000 files, 1,000 loaded (a minute or two)
    python bench/bench_scale.py --quick   # 1,000 files, 100 loaded (smoke test)
    python bench/bench_scale.py --check   # exit 1 if a target of issue 4 is missed

Measured, in one process:

* ``depmod cold``: a fresh ``ModPath`` on the folder (no saved index) runs ``depmod()``:
  every file read, hashed and its manifest parsed, and the index saved in the folder; wall
  time is judged, CPU time is shown beside it (a shared machine inflates wall time), and
  ``build_index`` alone (no write) too;
* ``re-index, nothing changed``: ``depmod()`` again (list the folder, stat every entry, parse
  nothing, save) and ``Index.refresh()`` alone;
* ``lookup``: mean of ``ModPath.find`` over many random names, then aliases, with the index
  warm; and of ``host.modinfo(name)``, the public way to the same lookup;
* ``insmod``: the first N files are loaded with ``host.insmod`` into a ``Host(leak_check=
  False)`` and into a default ``Host()`` (insmod never runs the leak check: only rmmod does,
  so both should match), side by side with a plain import of the same file
  (``spec_from_file_location`` + ``module_from_spec`` + ``exec_module``). The plain import
  is run twice: ``compile`` with ``sys.dont_write_bytecode`` (source compiled each time, the
  work insmod does) and ``pyc`` from a bytecode cache written beforehand (what a warm
  ``import`` costs). Each file is timed by every candidate in a rotated order, so a noisy
  neighbour slows all of them alike; ratios are of the per-module medians;
* ``memory``: RSS growth (``/proc/self/statm``) and ``tracemalloc`` growth per module
  loaded into a fresh host, for insmod and the plain import, measured apart from the timings
  (tracemalloc slows everything down);
* ``lsmod``: one ``host.lsmod()`` with N modules loaded.

The files are generated before the clock starts and aged past the index's racy window
(see ``livemod._depmod``), so that "nothing changed" means nothing to re-hash either.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import os
import platform
import py_compile
import random
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
from livemod._depmod import build_index
from livemod._modpath import ModPath

MODULE = '''\
"""Bench module {i}: a small plugin with a hook, an export and a helper class."""

__livemod__ = {{
    "name": "m{i:05d}", "version": "1.{i}.0", "aliases": ["alias{i}"], "license": "MIT",
    "author": "bench", "depends": [],
    "params": {{"factor": {{"type": "int", "default": {factor}, "doc": "multiplier"}}}},
}}


class Counter:
    """Counts calls."""

    def __init__(self, start):
        self.value = start

    def bump(self, n=1):
        self.value += n
        return self.value


def scale(x, factor={factor}):
    return x * factor


def describe():
    return "m{i:05d} scales by {factor}"


def init(mod):
    counter = Counter(mod.params.factor)
    mod.export("scale", scale)
    mod.export("counter", counter)
    mod.hook("bench.scale.{group}").add(scale)
'''

TARGETS = {"depmod cold": 3.0, "lookup": 0.001, "insmod/import": 3.0}


def generate(folder: Path, count: int) -> list[Path]:
    paths = []
    for i in range(count):
        path = folder / f"m{i:05d}.py"
        path.write_text(MODULE.format(i=i, factor=i % 7 + 1, group=i % 10))
        paths.append(path)
    return paths


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def plain_import(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        import resource  # peak, in KiB on Linux: a rough stand-in elsewhere
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class Table:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str]] = []
        self.failed: list[str] = []

    def row(self, label: str, value: str, target: str = "") -> None:
        self.rows.append((label, value, target))
        print(f"  {label:<44}{value:>16}  {target}", flush=True)

    def check(self, key: str, value: float, shown: str, label: str) -> None:
        ok = value <= TARGETS[key]
        if not ok:
            self.failed.append(label)
        self.row(label, shown, f"target < {TARGETS[key]:g}{'s' if key != 'insmod/import' else 'x'}"
                 f"  {'PASS' if ok else 'MISS'}")


def _forget_manifests() -> None:
    """Empty livemod's in-process cache of parsed manifests, for a truly cold measurement."""
    _manifest._PARSED.clear()


def bench_depmod(folder: Path, table: Table) -> None:
    _forget_manifests()
    build = timed(lambda: build_index([folder]))
    _forget_manifests()
    cold_modpath = ModPath([str(folder)])
    cpu = time.process_time()
    report = cold_modpath.depmod()
    cpu = time.process_time() - cpu
    table.check("depmod cold", report.seconds, f"{report.seconds:.3f} s",
                f"depmod cold ({len(report.modules)} modules, saved)")
    # On a shared machine wall time includes waiting for a CPU; CPU time does not.
    table.row("  the same, CPU time of this process", f"{cpu:.3f} s")
    table.row("  build_index alone (no write)", f"{build:.3f} s")
    again = cold_modpath.depmod()
    table.row("re-index, nothing changed (depmod)", f"{again.seconds:.3f} s")
    index = build_index([folder])
    time.sleep(0.25)  # past the racy window of the files just read
    table.row("re-index, nothing changed (refresh)", f"{timed(index.refresh):.3f} s")
    size = os.path.getsize(report.written[0]) if report.written else 0
    table.row("saved index size", f"{size / 1e6:.1f} MB")
    opened = ModPath([str(folder)])
    table.row("first lookup of a new ModPath (saved index)",
              f"{timed(lambda: opened.find('m00000')) * 1e3:.1f} ms")


def bench_lookup(folder: Path, count: int, table: Table) -> None:
    modpath = ModPath([str(folder)])
    modpath.find("m00000")
    time.sleep(0.25)  # depmod just wrote the index file: let the folder's mtime age
    modpath.find("m00000")
    rng = random.Random(4)
    picks = [rng.randrange(count) for _ in range(20_000)]
    names = [f"m{i:05d}" for i in picks]
    aliases = [f"alias{i}" for i in picks]
    per_name = timed(lambda: [modpath.find(n) for n in names]) / len(names)
    per_alias = timed(lambda: [modpath.find(a) for a in aliases]) / len(aliases)
    table.check("lookup", per_name, f"{per_name * 1e6:.1f} us",
                "lookup by name (ModPath.find, mean)")
    table.check("lookup", per_alias, f"{per_alias * 1e6:.1f} us", "lookup by alias (mean)")
    with livemod.Host(modpath=[folder]) as host:
        host.modinfo("m00000")
        time.sleep(0.25)
        host.modinfo("m00000")
        per_host = timed(lambda: [host.modinfo(n) for n in names[:5000]]) / 5000
        table.check("lookup", per_host, f"{per_host * 1e6:.1f} us",
                    "lookup via host.modinfo (mean)")
        miss = timed(lambda: host._modpath.find("no_such_module"))
        table.row("a miss (re-checks every entry)", f"{miss * 1e3:.1f} ms")


def bench_insmod(paths: list[Path], table: Table) -> None:
    for path in paths:  # the pyc candidate reads a cache written beforehand (untimed)
        py_compile.compile(str(path), doraise=True)
    fast = livemod.Host(leak_check=False)
    default = livemod.Host()
    warm = livemod.Host(leak_check=False)
    times: dict[str, list[float]] = {"compile": [], "pyc": [], "fast": [], "default": [],
                                     "warm": [], "compile2": []}
    keep: list[ModuleType] = []

    def compile_import(i: int, path: Path) -> None:
        sys.dont_write_bytecode = True
        try:
            keep.append(plain_import(path.with_suffix(".py"), f"bench_c_{i}"))
        finally:
            sys.dont_write_bytecode = False

    def pyc_import(i: int, path: Path) -> None:
        keep.append(plain_import(path, f"bench_p_{i}"))

    candidates: dict[str, Callable[[int, Path], object]] = {
        "compile": compile_import, "pyc": pyc_import,
        # Cold: the manifest was never parsed in this process. Warm: as after depmod or a
        # modprobe lookup, which parse it first (the cache is keyed by the file's bytes).
        "fast": lambda i, p: (_forget_manifests(), fast.insmod(p)),
        "default": lambda i, p: (_forget_manifests(), default.insmod(p)),
    }
    order = list(candidates)
    for i, path in enumerate(paths):
        order = order[1:] + order[:1]  # rotate: nobody always goes first
        for key in order:
            start = time.perf_counter()
            candidates[key](i, path)
            times[key].append(time.perf_counter() - start)
    # Warm: as after depmod or a modprobe lookup, which parse each manifest first (the cache
    # is keyed by the file's bytes). Side by side with plain imports again.
    for path in paths:
        _manifest.read_manifest(path)
    for i, path in enumerate(paths):
        pair = [("warm", lambda p=path: warm.insmod(p)),
                ("compile2", lambda i=i, p=path: compile_import(10**6 + i, p))]
        for key, run in (pair if i % 2 else pair[::-1]):
            start = time.perf_counter()
            run()
            times[key].append(time.perf_counter() - start)
    med = {key: statistics.median(values) for key, values in times.items()}
    n = len(paths)
    tenth = max(1, n // 10)
    for key in ("fast", "compile"):
        first, last = (statistics.median(times[key][:tenth]),
                       statistics.median(times[key][-tenth:]))
        table.row(f"{'insmod' if key == 'fast' else 'plain import'}: first/last {tenth} "
                  "(median)", f"{first * 1e6:.0f}/{last * 1e6:.0f} us")
    for key, label in (("compile", "plain import, compiling (median)"),
                       ("pyc", "plain import, from .pyc (median)"),
                       ("fast", "insmod, Host(leak_check=False) (median)"),
                       ("default", "insmod, Host() (median)"),
                       ("warm", "insmod, manifest already parsed (median)")):
        table.row(label, f"{med[key] * 1e6:.0f} us")
    for key, host_label in (("fast", "leak_check=False"), ("default", "default"),
                            ("warm", "manifest-known")):
        ratio = med[key] / med["compile2" if key == "warm" else "compile"]
        table.check("insmod/import", ratio, f"{ratio:.2f}x", f"insmod/import ({host_label})")
        print(f"RATIO insmod/import {n} {host_label} {ratio:.2f}x", flush=True)
        warm = med[key] / med["pyc"]
        table.row(f"insmod/import from .pyc ({host_label})", f"{warm:.2f}x")
        print(f"RATIO insmod/pyc-import {n} {host_label} {warm:.2f}x", flush=True)
    lsmod = [timed(default.lsmod) for _ in range(5)]
    table.row(f"lsmod with {len(default.lsmod())} modules (median of 5)",
              f"{statistics.median(lsmod) * 1e3:.1f} ms")
    # Unload cost is bench_unload's subject; 1,000 leak checks would only make this slow.
    default.leak_check = False
    fast.close()
    default.close()


def memory_child(mode: str, metric: str, folder: str, start: int, n: int) -> None:
    """Print the growth per module of ``metric`` when ``mode`` loads files [start, start+n).

    Runs in a fresh interpreter, so that memory freed by earlier phases cannot hide growth.
    """
    paths = sorted(Path(folder).glob("m*.py"))[start - 1:start + n]
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


def bench_memory(folder: Path, start: int, n: int, table: Table) -> None:
    for mode, label in (("insmod", "insmod"), ("plain", "plain import")):
        for metric in ("rss", "tracemalloc"):
            done = subprocess.run(
                [sys.executable, __file__, "--memory-child", mode, metric, str(folder),
                 str(start), str(n)], capture_output=True, text=True, check=True, timeout=600)
            per = float(done.stdout.split()[-1])
            table.row(f"memory per module, {label} ({metric})", f"{per / 1024:.1f} KiB")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000 files, 100 loaded")
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    parser.add_argument("--memory-child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child:
        mode, metric, folder, start, n = args.memory_child
        memory_child(mode, metric, folder, int(start), int(n))
        return 0
    files, loaded = (1_000, 100) if args.quick else (10_000, 1_000)
    print(f"bench_scale: {files} module files, {loaded} loaded; Python "
          f"{platform.python_version()} on {platform.platform()}, {os.cpu_count()} CPUs")
    table = Table()
    with tempfile.TemporaryDirectory(prefix="livemod-scale-") as tmp:
        folder = Path(tmp) / "modpath"
        folder.mkdir()
        paths = generate(folder, files)
        time.sleep(0.25)  # age the files past the racy window (see the docstring)
        bench_depmod(folder, table)
        bench_lookup(folder, files, table)
        bench_insmod(paths[:loaded], table)
        bench_memory(folder, loaded + 1, loaded, table)
    print("RESULT: " + ("all targets PASS" if not table.failed
                        else "MISSED: " + ", ".join(table.failed)))
    return 1 if args.check and table.failed else 0


if __name__ == "__main__":
    sys.exit(main())
