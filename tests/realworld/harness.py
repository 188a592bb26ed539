"""Download the real-world packages, build a modpath of them, run each case in isolation.

Wheels are fetched at run time with ``pip download --no-deps`` into a cache folder
(``$LIVEMOD_REALWORLD_CACHE``, else ``~/.cache/livemod/realworld``) and never vendored.
Each import name a wheel provides is copied into a temporary modpath with a
``__livemod__`` manifest appended to its ``__init__.py`` (at the end, so a
``from __future__`` import stays first). A case runs in a subprocess started with ``-S``
and a sys.path of the standard library, livemod's source and this folder only: no
installed copy of any package is reachable, so what works works through livemod.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

from cases import CASES, DEPENDS, DISTRIBUTIONS, Case

HERE = Path(__file__).resolve().parent
SRC = HERE.parents[1] / "src"


class Offline(Exception):
    """The wheels could not be downloaded (no network, no index)."""


def cache_dir() -> Path:
    env = os.environ.get("LIVEMOD_REALWORLD_CACHE")
    base = Path(env) if env else Path.home() / ".cache" / "livemod" / "realworld"
    return base / f"py{sys.version_info.major}{sys.version_info.minor}"


def needed(cases: tuple[Case, ...]) -> set[str]:
    """Import names the cases need (their modules and every dependency, transitively)."""
    todo = [c.module for c in cases]
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(DEPENDS.get(name, ()))
    return seen


def download(cases: tuple[Case, ...] = CASES) -> dict[str, Path]:
    """Fetch the wheels the cases need; return requirement -> wheel path."""
    names = needed(cases)
    wanted = [req for req, tops in DISTRIBUTIONS.items() if names & set(tops)]
    folder = cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    found = {req: _wheel_in(folder, req) for req in wanted}
    missing = [req for req, wheel in found.items() if wheel is None]
    if missing:
        done = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
             "-q", "-d", str(folder), *missing],
            capture_output=True, text=True, timeout=600,
        )
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise Offline(f"pip download failed for {', '.join(missing)}: {' '.join(tail)}")
        found = {req: _wheel_in(folder, req) for req in wanted}
    out = {}
    for req, wheel in found.items():
        if wheel is None:
            raise Offline(f"pip download gave no wheel for {req}")
        out[req] = wheel
    return out


def _wheel_in(folder: Path, req: str) -> Path | None:
    dist, _, version = req.partition("==")
    stem = re.sub(r"[-_.]+", "_", dist).lower()
    for wheel in sorted(folder.glob("*.whl")):
        parts = wheel.name.split("-")
        if re.sub(r"[-_.]+", "_", parts[0]).lower() == stem and parts[1] == version:
            return wheel
    return None


def build_modpath(wheels: dict[str, Path], root: Path) -> Path:
    """Unpack each wheel's import names into ``root`` and add a manifest to each."""
    root.mkdir(parents=True, exist_ok=True)
    for req, wheel in wheels.items():
        version = re.match(r"\d+(\.\d+)*", req.partition("==")[2])
        assert version is not None
        with zipfile.ZipFile(wheel) as zf:
            for tops in (DISTRIBUTIONS[req],):
                for top in tops:
                    members = [m for m in zf.namelist()
                               if m.startswith(top + "/") or m == top + ".py"]
                    zf.extractall(root, members)
                    _add_manifest(root, top, version.group())
    return root


def _add_manifest(root: Path, top: str, version: str) -> None:
    target = root / top / "__init__.py"
    if not target.exists():
        target = root / f"{top}.py"
    manifest = {"name": top, "version": version, "depends": list(DEPENDS.get(top, ()))}
    with open(target, "a", encoding="utf-8") as f:
        f.write(f"\n\n__livemod__ = {manifest!r}\n")


def run_case(case: Case, modpath: Path, cycles: int, timeout: float = 600) -> dict[str, Any]:
    """Run one case in an isolated subprocess; return its measurements."""
    code = (
        "import sys; "
        f"sys.path[:0] = [{str(SRC)!r}, {str(HERE)!r}]; "
        "import _runner; _runner.main()"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["LIVEMOD_CACHE_DIR"] = os.environ.get("LIVEMOD_CACHE_DIR", str(cache_dir() / "bytecode"))
    try:
        done = subprocess.run(
            [sys.executable, "-S", "-c", code, str(modpath), case.module, str(cycles)],
            capture_output=True, text=True, timeout=timeout, env=env, input=case.exercise,
        )
    except subprocess.TimeoutExpired:
        return {"module": case.module, "loaded": False, "works": False, "clean": False,
                "error": f"timed out after {timeout}s"}
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        return {"module": case.module, "loaded": False, "works": False, "clean": False,
                "error": (done.stderr.strip().splitlines() or ["no output"])[-1]}
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def table(results: list[dict[str, Any]]) -> str:
    """The per-package table (one row per case) and the share that is clean."""
    head = (f"{'package':20} {'loaded':6} {'works':5} {'clean':5} {'survivors':9} "
            f"{'namespaces':10} {'rss MiB/cycle':13} {'registries':24} note")
    rows = [head, "-" * len(head)]
    for r in results:
        reg = ", ".join(f"{k}+{v}" for k, v in sorted(r.get("registries", {}).items()) if v)
        once = ", ".join(f"{k}+{v}" for k, v in sorted(r.get("registries_once", {}).items())
                         if v)
        reg = ", ".join(x for x in (reg, once and f"once: {once}") if x)
        rows.append(
            f"{r['module']:20} {_yes(r['loaded']):6} {_yes(r['works']):5} "
            f"{_yes(r['clean']):5} {r.get('survivors', '-')!s:9} "
            f"{r.get('namespaces', '-')!s:10} {r.get('rss_per_cycle_mib', '-')!s:13} "
            f"{reg or '-':24} {(r.get('error') or _native_note(r))[:90]}"
        )
    clean = sum(1 for r in results if r["clean"])
    rows.append(f"clean: {clean}/{len(results)} ({100 * clean // max(len(results), 1)}%)")
    return "\n".join(rows)


def _native_note(r: dict[str, Any]) -> str:
    native = r.get("native") or ()
    if not native:
        return ""
    return (f"native: {len(native)} extension(s); each load maps a copy that stays "
            f"mapped (RSS)")


def _yes(flag: object) -> str:
    return "yes" if flag else "no"
