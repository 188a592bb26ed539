"""Reading a manifest is linear in its size: 1k, 10k and 100k entries.

Run (from the repository root)::

    python bench/bench_manifest.py           # 5 rounds
    python bench/bench_manifest.py --quick   # 1 round

For ``aliases`` and ``depends`` lists of N entries (one per line, as a generated manifest
would be written), ``parse_manifest`` is timed on the bytes with its cache cleared, with the
manifest limits lifted past N (``livemod._manifest_limits.LIMITS`` replaced) so that the
reading itself is measured. Linear reading shows as about 10x per step; the quadratic
duplicate checks this replaced showed 100x. Then the same 100k manifest under the default
limits: refused with a ManifestError naming the limit, and how long that took.

Printed: median thread CPU time per read, and ``RATIO <field> <N>`` = time(N) / time(N/10).
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time

from livemod import _manifest, _manifest_limits
from livemod.errors import ManifestError


def manifest(n: int, field: str) -> bytes:
    item = (lambda i: f'    "alias_{i:06d}"') if field == "aliases" else \
        (lambda i: f'    "dep_{i:06d}>=1.0"')
    items = ",\n".join(item(i) for i in range(n))
    return (f'"""Generated."""\n__livemod__ = {{"name": "big", "{field}": [\n{items}\n]}}\n'
            f"\ndef init(mod):\n    pass\n").encode()


def read(source: bytes) -> float:
    _manifest._PARSED.clear()
    cpu = time.thread_time()
    try:
        _manifest.parse_manifest(source, path="/bench/big.py", source_file="/bench/big.py",
                                 is_package=False)
    except ManifestError as exc:
        print(f"    refused: {exc}")
    return time.thread_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    rounds = 1 if args.quick else 5
    sizes = (1_000, 10_000, 100_000)
    print(f"CPython {sys.version.split()[0]}; thread CPU time, median of {rounds}")
    default = _manifest_limits.LIMITS
    lifted = _manifest_limits.ManifestLimits(
        manifest_bytes=1 << 30, full_parse_bytes=1 << 30, aliases=1 << 30, depends=1 << 30,
        params=1 << 30,
    )
    for field in ("aliases", "depends"):
        sources = {n: manifest(n, field) for n in sizes}
        _manifest_limits.LIMITS = lifted
        try:
            times = {n: statistics.median(read(sources[n]) for _ in range(rounds))
                     for n in sizes}
        finally:
            _manifest_limits.LIMITS = default
        for n in sizes:
            print(f"{field:>8} {n:>7} entries {len(sources[n]) / 1e6:6.2f} MB "
                  f"{times[n] * 1e3:9.1f} ms")
        for small, big in itertools.pairwise(sizes):
            print(f"RATIO {field} {big} {times[big] / times[small]:.1f}")
        print(f"{field:>8} 100000 entries under the default limits:")
        print(f"    {read(sources[100_000]) * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
