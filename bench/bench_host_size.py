"""Idle rmmod and replace in a host that holds many other modules (issue 12).

Run::

    python bench/bench_host_size.py                 # sizes 0, 100, 400 (about a minute)
    python bench/bench_host_size.py --quick         # sizes 0 and 20, few cycles (smoke test)
    python bench/bench_host_size.py --sizes 0,1000 --cycles 200

A load, an unload or an upgrade is about one module, so its cost should not grow with what
else the host holds. For each size, a fresh host loads that many other modules (each with one
implementation on a hook of its own and one on a hook they share with the victim), then the
victim (bench_unload's module) and times, idle with the leak check off, ``cycles`` of each
operation: ``rmmod``, the ``insmod`` after it, and ``replace`` between two versions. Each
sample is the calling thread's CPU time (``time.thread_time``); the figure is the median.
Printed: ``RATIO <op> size/empty <size>``, the median at that size over the median in an
empty host, from the same run. Three kinds of module (``--kinds``): ``plain`` as above;
``logger``, where every module, the victim too, also takes a logger of its own
(``logging.getLogger(__name__)``, as most library modules do): ``RATIO <op>+logger ...``;
``library``, where each also defines what library modules commonly do (an enum, a
dataclass, a generic class, a warning category, a cached function: ``LIBRARY``).
There is no target of its own; the idle targets of ``bench_unload.py`` are for a host of a
few modules, and a host of hundreds should pay about what that pays.

Like ``bench_unload.py``, the script clears ``sys.dont_write_bytecode`` (a ``replace`` would
otherwise compile the incoming version each time on a machine that sets
``PYTHONDONTWRITEBYTECODE``).
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench_unload  # the victim's two versions

import livemod

NEIGHBOUR = '''\
"""A neighbour: one implementation on a hook of its own, one on the victim's hook."""
__livemod__ = {{"name": "n{i:05d}", "version": "1.0.0"}}
{logger}


def impl(x):
    return x


def init(mod):
    mod.hook("own.{i}").add(impl)
    mod.hook("unload.1").add(impl)
'''


LIBRARY = '''\
import dataclasses, enum, functools, logging, re, typing
log = logging.getLogger(__name__)


class Color(enum.Enum):
    RED = 1
    BLUE = 2


@dataclasses.dataclass
class Point:
    x: int
    y: typing.List[int]
    z: typing.Optional[typing.Dict[str, int]] = None


class LibraryWarning(DeprecationWarning):
    pass


@functools.lru_cache(maxsize=32)
def cached(n):
    return n * 2


PATTERN = re.compile(r"item-\\d+")
T = typing.TypeVar("T")


class Box(typing.Generic[T]):
    pass


IntBox = Box[int]
'''

#: What each module -- the neighbours and both versions of the victim -- adds in each kind.
KINDS = {
    "plain": "",
    # What most library modules do: a logger of its own, by its name.
    "logger": "import logging\nlog = logging.getLogger(__name__)\n",
    # And what many do besides: classes (an enum, a dataclass, a generic, a warning
    # category), typing's caches, a cached function, a compiled pattern.
    "library": LIBRARY,
}


def measure(root: Path, kind: str, size: int, cycles: int) -> dict[str, float]:
    """Median thread CPU (seconds) of each operation with ``size`` other modules."""
    folder = root / f"{kind}-{size}"
    folder.mkdir()
    extra = KINDS[kind]
    v1, v2 = folder / "v1" / "victim.py", folder / "v2" / "victim.py"
    for path, text in ((v1, bench_unload.VICTIM_SOURCE), (v2, bench_unload.VICTIM_V2)):
        path.parent.mkdir()
        path.write_text(text + extra)
    found: dict[str, list[float]] = {"rmmod": [], "insmod": [], "replace": []}
    with livemod.Host(leak_check=False) as host:
        for i in range(size):
            path = folder / f"n{i:05d}.py"
            path.write_text(NEIGHBOUR.format(i=i, logger=extra))
            host.insmod(path)
        host.insmod(v1)
        gc.collect()
        for c in range(cycles + 5):  # the first five warm up (bytecode cache, caches)
            start = time.thread_time()
            host.rmmod("victim")
            middle = time.thread_time()
            host.insmod(v1)
            end = time.thread_time()
            if c >= 5:
                found["rmmod"].append(middle - start)
                found["insmod"].append(end - middle)
        for c in range(cycles + 5):
            start = time.thread_time()
            host.replace("victim", v2 if c % 2 == 0 else v1, downgrade=True)
            spent = time.thread_time() - start
            if c >= 5:
                found["replace"].append(spent)
    return {op: statistics.median(times) for op, times in found.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="sizes 0 and 20, 20 cycles")
    parser.add_argument("--sizes", default="", help="host sizes, comma-separated (0,100,400)")
    parser.add_argument("--cycles", type=int, default=0, help="cycles per operation (150)")
    parser.add_argument("--kinds", default=",".join(KINDS),
                        help=f"module kinds, comma-separated ({','.join(KINDS)})")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else (
        [0, 20] if args.quick else [0, 100, 400])
    if 0 not in sizes:
        sizes.insert(0, 0)
    cycles = args.cycles or (20 if args.quick else 150)
    sys.dont_write_bytecode = False
    print(f"bench_host_size: Python {platform.python_version()} on {platform.platform()}, "
          f"{os.cpu_count()} CPUs; {cycles} cycles per operation, thread CPU medians")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        os.environ["LIVEMOD_CACHE_DIR"] = str(root / "cache")
        kinds = args.kinds.split(",")
        results = {(k, size): measure(root, k, size, cycles) for k in kinds for size in sizes}
    for kind in kinds:
        label = "" if kind == "plain" else f"+{kind}"
        for op in ("rmmod", "insmod", "replace"):
            empty = results[(kind, 0)][op]
            print(f"  {op}{label}: " + ", ".join(
                f"{size} others {results[(kind, size)][op] * 1e6:.0f} us" for size in sizes))
            for size in sizes[1:]:
                ratio = results[(kind, size)][op] / empty
                print(f"RATIO {op}{label} size/empty {size} {ratio:.2f}x", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
