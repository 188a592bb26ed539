"""The worker integrations with real processes: a multiprocessing pool through its
initializer, and celery's prefork pool through its worker-process signals."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from livemod.integrations import initializer
from livemod.service import Coordinator, Outcome
from service_support import FIXTURES, Service, greet_in_worker, wait_for


@pytest.fixture
def svc(monkeypatch: pytest.MonkeyPatch) -> Iterator[Service]:
    service = Service("jobs")
    monkeypatch.setenv("XDG_RUNTIME_DIR", service.runtime)  # the pool inherits it
    yield service
    service.stop()


def test_pool_processes_are_workers_and_upgrade_together(svc: Service) -> None:
    ctx = multiprocessing.get_context("spawn")
    init = initializer("jobs", insmod=[svc.module("greet_v1.py")])
    with ctx.Pool(2, initializer=init) as pool:
        first = pool.map(greet_in_worker, ["a"] * 40, chunksize=1)
        assert {tuple(r) for _, r in first} == {("hello a from 1.0.0",)}
        wait_for(lambda: len(Coordinator("jobs").workers()[0]) == 2, what="2 pool workers")
        outcome = Coordinator("jobs").run("upgrade", {"name": "greet",
                                                      "path": svc.module("greet_v2.py")})
        assert outcome.outcome == "commit" and len(outcome.results) == 2
        after = pool.map(greet_in_worker, ["b"] * 40, chunksize=1)
        assert {tuple(r) for _, r in after} == {("hello b from 2.0.0",)}
        pool.close()
        pool.join()


def test_a_worker_still_loading_its_start_up_set_is_waited_for(svc: Service) -> None:
    # Its socket is up from Host(service=...) on, before greet is loaded: a change that
    # counted it in at once would abort with "greet is not loaded" (seen in CI with a pool
    # whose second process was still in its initializer).
    gate = Path(svc.runtime) / "gate-open"
    script = ("import sys, threading; from livemod.integrations import worker_host; "
              "h = worker_host('jobs', insmod=sys.argv[1:]); print('ready', flush=True); "
              "sys.stdin.read(); h.close()")
    proc = subprocess.Popen(
        [sys.executable, "-c", script, svc.module("gate.py"), svc.module("greet_v1.py")],
        env={**svc.env, "LIVEMOD_TEST_GATE": str(gate)}, stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, text=True)
    try:
        coordinator = Coordinator("jobs")
        wait_for(lambda: coordinator.workers()[0], 30, what="the worker's socket")
        statuses, errors, _ = coordinator.ask_all("service")
        assert not errors and [s["starting"] for s in statuses.values()] == [True]
        outcome: list[Outcome] = []
        runner = threading.Thread(target=lambda: outcome.append(coordinator.run(
            "upgrade", {"name": "greet", "path": svc.module("greet_v2.py")})))
        runner.start()
        gate.touch()
        runner.join(60)
        assert not runner.is_alive() and len(outcome) == 1, outcome
        done = outcome[0]
        assert done.outcome == "commit" and list(done.results) == [proc.pid]
        rows, errors, _ = coordinator.ask_all("lsmod")
        assert not errors and {r["name"]: r["version"] for r in rows[proc.pid]}["greet"] == "2.0.0"
    finally:
        assert proc.stdout is not None and proc.stdin is not None
        proc.stdin.close()
        proc.wait(30)
        proc.stdout.close()


def test_celery_prefork_processes_join_the_service(svc: Service) -> None:
    pytest.importorskip("celery")
    env = {**svc.env, "PYTHONPATH": str(FIXTURES)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "celery_app", "worker", "--pool", "prefork",
         "-c", "2", "--loglevel", "warning", "--without-heartbeat", "--without-gossip",
         "--without-mingle"], env=env, cwd=str(Path(FIXTURES)),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        coordinator = Coordinator("tasks")
        wait_for(lambda: len(coordinator.workers()[0]) == 2, 60, what="2 celery processes")
        outcome = coordinator.run("upgrade", {"name": "greet",
                                              "path": svc.module("greet_v2.py")})
        assert outcome.outcome == "commit" and len(outcome.results) == 2
        rows, errors, _ = coordinator.ask_all("lsmod")
        assert not errors and {r[0]["version"] for r in rows.values()} == {"2.0.0"}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
