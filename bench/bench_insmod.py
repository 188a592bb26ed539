"""insmod of a real package with a cold and a warm bytecode cache, against a warm ``import``.

Run (from the repository root)::

    python bench/bench_insmod.py                     # pygments, 9 rounds (~30 s)
    python bench/bench_insmod.py --package packaging
    python bench/bench_insmod.py --quick             # 3 rounds (smoke test)

The package is copied from the running interpreter's installation into a temporary
modpath, with a ``__livemod__`` manifest appended to its ``__init__.py``. Every sample runs
in a fresh child process (``-S``; sys.path = livemod's source and the modpath only), which
times, on the thread CPU clock, only the step being compared, after livemod itself is
imported and a Host is created (in every mode, so the standard library livemod imports is
loaded alike):

* **import**: ``import pkg`` plus the submodules listed, with ``__pycache__`` warm (a
  warm-up run wrote it);
* **insmod-cold**: ``host.insmod(pkg)`` and the same submodules through
  ``host.namespace``, with livemod's bytecode cache emptied first;
* **insmod-warm**: the same with the cache filled by the previous sample.

Each round runs the three in rotated order; the verdict is the median over rounds of the
per-round ratios (aim: insmod-warm/import <= 1.5).
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SUBMODULES = {
    "pygments": ("lexers.python", "formatters.html", "styles.default"),
    "packaging": ("version", "specifiers", "requirements", "markers", "tags"),
    "pluggy": (),
}

CHILD = r"""
import sys, time
sys.path[:0] = [SRC, MODPATH]
mode, name, subs = sys.argv[1], sys.argv[2], [s for s in sys.argv[3].split(",") if s]
import importlib
# Both modes import livemod and make a Host first, so the standard-library modules livemod
# uses are already loaded in both: only the package itself is compared.
import livemod
host = livemod.Host(modpath=[MODPATH], name="bench")
if mode == "import":
    t0 = time.thread_time()
    importlib.import_module(name)
    for s in subs:
        importlib.import_module(name + "." + s)
    t1 = time.thread_time()
else:
    t0 = time.thread_time()
    host.insmod(MODPATH + "/" + name)
    ns = host.namespace(name)
    for s in subs:
        view = ns
        for part in s.split("."):
            view = getattr(view, part)
    t1 = time.thread_time()
print(t1 - t0)
"""


def sample(mode: str, name: str, modpath: Path, cache: Path) -> float:
    code = CHILD.replace("SRC", repr(str(ROOT / "src"))).replace("MODPATH", repr(str(modpath)))
    if mode == "insmod-cold":
        shutil.rmtree(cache, ignore_errors=True)
    env = {"LIVEMOD_CACHE_DIR": str(cache), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-S", "-c", code, mode.partition("-")[0], name,
         ",".join(SUBMODULES.get(name, ()))],
        capture_output=True, text=True, timeout=120, env=env,
    )
    if done.returncode != 0:
        raise SystemExit(f"{mode} failed:\n{done.stderr}")
    return float(done.stdout.strip())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--package", default="pygments")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    rounds = 3 if args.quick else args.rounds
    spec = importlib.util.find_spec(args.package)
    if spec is None or not spec.submodule_search_locations:
        print(f"SKIP: package {args.package!r} is not installed (pip install it, or choose "
              f"another with --package)")
        return 0
    with tempfile.TemporaryDirectory(prefix="livemod-bench-insmod-") as tmp:
        modpath = Path(tmp) / "mods"
        target = modpath / args.package
        shutil.copytree(spec.submodule_search_locations[0], target,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        with open(target / "__init__.py", "a") as f:
            f.write(f'\n__livemod__ = {{"name": {args.package!r}}}\n')
        cache = Path(tmp) / "cache"
        sample("import", args.package, modpath, cache)  # writes __pycache__: a warm import
        modes = ["import", "insmod-cold", "insmod-warm"]
        times: dict[str, list[float]] = {m: [] for m in modes}
        ratios: dict[str, list[float]] = {"insmod-cold/import": [], "insmod-warm/import": []}
        for r in range(rounds):
            order = modes[r % 3:] + modes[:r % 3]
            if order.index("insmod-warm") < order.index("insmod-cold"):
                # warm needs a filled cache: fill it first (untimed), then keep the order.
                sample("insmod-warm", args.package, modpath, cache)
            got = {m: sample(m, args.package, modpath, cache) for m in order}
            for m in modes:
                times[m].append(got[m])
            for key in ratios:
                ratios[key].append(got[key.split("/")[0]] / got["import"])
        subs = ", ".join(SUBMODULES.get(args.package, ())) or "no submodules"
        print(f"package {args.package} (+ {subs}), "
              f"{rounds} rounds, thread CPU ms (median):")
        for m in modes:
            print(f"  {m:12} {1000 * statistics.median(times[m]):8.2f}")
        for key, values in ratios.items():
            print(f"RATIO {key} {args.package} median {statistics.median(values):.2f} "
                  f"min {min(values):.2f} max {max(values):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
