"""Real PyPI packages loaded, exercised, unloaded and cycled in isolation (see harness.py).

The normal suite runs a fast subset; ``LIVEMOD_REALWORLD=1`` runs every case and checks the
bar (at least 90% of the cases clean). Offline, the tests skip and say why. The table:
``python tests/realworld/report.py``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cases import CASES, Case
from harness import Offline, build_modpath, download, run_case, table

FULL = os.environ.get("LIVEMOD_REALWORLD") == "1"
SELECTED = tuple(c for c in CASES if FULL or c.fast)
CYCLES = int(os.environ.get("LIVEMOD_REALWORLD_CYCLES", "10" if FULL else "3"))

pytestmark = pytest.mark.realworld


@pytest.fixture(scope="module")
def modpath(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    try:
        wheels = download(SELECTED)
    except Offline as exc:
        pytest.skip(f"real-world packages cannot be downloaded ({exc}); run online, or "
                    f"put the wheels in $LIVEMOD_REALWORLD_CACHE")
    yield build_modpath(wheels, tmp_path_factory.mktemp("realworld") / "mods")


RESULTS: list[dict[str, Any]] = []


@pytest.mark.parametrize("case", SELECTED, ids=lambda c: c.module)
def test_a_real_package_loads_works_and_unloads(case: Case, modpath: Path) -> None:
    result = run_case(case, modpath, CYCLES)
    RESULTS.append(result)
    assert result["loaded"], result.get("error")
    assert result["works"], result.get("error")
    assert result.get("cycles") == CYCLES, result.get("error")


@pytest.mark.skipif(not FULL, reason="the whole suite runs with LIVEMOD_REALWORLD=1")
def test_at_least_ninety_percent_of_the_cases_are_clean() -> None:
    assert len(RESULTS) == len(SELECTED), "run the whole module, not one case"
    clean = sum(1 for r in RESULTS if r["clean"])
    assert clean * 10 >= 9 * len(RESULTS), "\n" + table(RESULTS)
