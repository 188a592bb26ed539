"""The benchmarks in bench/ run to the end in --quick mode and print their ratio lines.

No timing is asserted here (the machines are shared and noisy): the scripts print ratios
measured side by side, and a person or CI job with ``--check`` judges them.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench"


def run(script: str) -> str:
    done = subprocess.run(
        [sys.executable, str(BENCH / script), "--quick"],
        capture_output=True, text=True, timeout=120, cwd=BENCH.parent,
    )
    assert done.returncode == 0, f"{script} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def ratio_rows(out: str) -> set[tuple[str, str]]:
    """(label, n) of every ``RATIO`` line, e.g. ("hook/loop", "10")."""
    rows = set()
    for line in out.splitlines():
        if line.startswith("RATIO "):
            words = line.split()
            n = next(w for w in words[2:] if w.isdigit())
            rows.add((" ".join(words[1:words.index(n)]), n))
    return rows


def test_dispatch_benchmark_prints_ratios() -> None:
    out = run("bench_dispatch.py")
    rows = ratio_rows(out)
    # pluggy and blinker are optional: their rows are either measured or say "skipped".
    for label in ("hook/loop", "pluggy/hook", "blinker/hook"):
        for n in ("1", "10"):
            assert (label, n) in rows, out
    assert "RESULT:" in out


def test_acall_floor_benchmark_prints_ratios() -> None:
    rows = ratio_rows(run("bench_acall_floor.py"))
    assert {(f"{part}/loop", "1") for part in (
        "coroutine", "+marker", "+keyword-only", "+loop-learning", "livemod")} <= rows, rows


def test_unload_benchmark_prints_ratios() -> None:
    rows = ratio_rows(run("bench_unload.py"))
    for label in ("GONE hammer/idle", "rmmod hammer/idle", "rmmod on/off"):
        for n in ("1", "10"):
            assert (label, n) in rows, rows


def test_stack_scan_benchmark_prints_ratios() -> None:
    rows = ratio_rows(run("bench_stackscan.py"))
    assert {("scan/faulthandler", n) for n in ("10", "100", "1000")} <= rows, rows


def test_manifest_benchmark_prints_ratios() -> None:
    rows = ratio_rows(run("bench_manifest.py"))
    assert {(f, n) for f in ("aliases", "depends") for n in ("10000", "100000")} <= rows, rows


def test_reload_benchmark_prints_ratios() -> None:
    out = run("bench_reload.py")
    assert "RATIO reload busy/idle 8 leak_check=on" in out, out
    assert "RATIO reload on/off 8 callers" in out, out
    assert "TARGET reload under 8 callers" in out, out


def test_load_benchmark_prints_ratios() -> None:
    out = run("bench_load.py")
    rows = ratio_rows(out)
    assert {("insmod/import cold", "1"), ("insmod/import warm", "1"), ("insmod last/first", "100"),
            ("memory insmod/import rss", "50"), ("cycle RSS KiB/1000", "200")} <= rows, out
    assert out.count("TARGET ") == 6, out


def test_host_size_benchmark_prints_ratios() -> None:
    rows = ratio_rows(run("bench_host_size.py"))
    assert {(f"{op}{kind} size/empty", "20") for op in ("rmmod", "insmod", "replace")
            for kind in ("", "+logger", "+library")} <= rows, rows


def test_first_touch_benchmark_prints_ratios() -> None:
    rows = ratio_rows(run("bench_first_touch.py"))
    assert {(label, n) for label in ("get/ns_get", "thread busy/idle")
            for n in ("0", "2", "8")} <= rows, rows
