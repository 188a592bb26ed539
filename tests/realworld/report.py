"""Print the real-world table: ``python tests/realworld/report.py [--cycles N] [case ...]``."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cases import CASES
from harness import Offline, build_modpath, download, run_case, table


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cycles", type=int, default=10)
    parser.add_argument("cases", nargs="*", help="module names (default: all)")
    args = parser.parse_args()
    cases = tuple(c for c in CASES if not args.cases or c.module in args.cases)
    try:
        wheels = download(cases)
    except Offline as exc:
        print(f"cannot run the real-world suite: {exc}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="livemod-realworld-") as tmp:
        modpath = build_modpath(wheels, Path(tmp) / "mods")
        results = []
        for case in cases:
            results.append(run_case(case, modpath, args.cycles))
            print(f"  {case.module}: {'clean' if results[-1]['clean'] else 'NOT clean'}",
                  file=sys.stderr, flush=True)
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
