"""The example app as service "web" under real gunicorn (4 UvicornWorkers) and real
uvicorn --workers 4, driven by a real HTTP load: all-or-nothing upgrades of every worker.
Bounded in time; every server is started on 127.0.0.1 by the test and stopped at its end."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator

import pytest

pytest.importorskip("uvicorn")
pytest.importorskip("httpx")
pytest.importorskip("starlette")

from livemod.cli import EXIT_CODES
from web_service_support import MODULES, PICKY, Load, WebService, wait_for

V1, V2 = str(MODULES / "hello_v1.py"), str(MODULES / "hello_v2.py")
ABORTED = next(c for cls, c in EXIT_CODES.items() if cls.__name__ == "TransactionAborted")
UPGRADES = int(os.environ.get("LIVEMOD_WEB_UPGRADES", "10"))


@pytest.fixture(params=["gunicorn", "uvicorn"])
def web(request: pytest.FixtureRequest) -> Iterator[WebService]:
    if request.param == "gunicorn":
        pytest.importorskip("gunicorn")
    service = WebService(request.param, workers=4)
    yield service
    service.stop()


def _upgrade_to(web: WebService, version: str) -> float:
    args = ["upgrade", "hello", V2] if version == "v2" else ["upgrade", "--downgrade",
                                                             "hello", V1]
    r = web.cli(*args)
    done = time.monotonic()
    assert r.returncode == 0, (r.stdout, r.stderr, web.output()[-2000:])
    assert "committed in 4 worker(s)" in r.stdout, r.stdout
    return done


def test_upgrades_under_load_never_fail_and_never_answer_old(web: WebService) -> None:
    with Load(web.url, clients=8) as load:
        wait_for(lambda: load.count() > 20, what="the load getting going")
        version = "v1"
        for _ in range(UPGRADES):
            version = "v2" if version == "v1" else "v1"
            committed = _upgrade_to(web, version)
            before = load.count()
            wait_for(lambda b=before: load.count() > b + 8, what="requests after the commit")
            late = load.since(committed)
            old = [r for r in late if r[3] != version]
            assert not old, f"{len(old)} answers from the old version after the commit"
    assert load.failures == [], load.failures[:5]
    assert set(web.versions().values()) == {"1.0.0" if version == "v1" else "2.0.0"}
    assert set(web.generations().values()) == {UPGRADES}


def test_one_worker_refusing_aborts_the_upgrade_everywhere(web: WebService) -> None:
    victim = web.worker_pids()[1]
    with open(web.marker, "w") as f:
        f.write(f"refuse {victim}")
    with Load(web.url, clients=4) as load:
        r = web.cli("upgrade", "hello", str(PICKY))
    assert r.returncode == ABORTED, (r.stdout, r.stderr)
    assert f"pid {victim}: no: module 'hello' failed to load" in r.stderr, r.stderr
    assert f"worker {victim} refuses hello 3.0.0" in r.stderr
    assert load.failures == [] and {rec[3] for rec in load.records} == {"v1"}
    assert set(web.versions().values()) == {"1.0.0"}
    assert set(web.generations().values()) == {0}


def test_a_worker_stopped_during_prepare_aborts_after_the_timeout(web: WebService) -> None:
    victim = web.worker_pids()[2]
    with open(web.marker, "w") as f:
        f.write(f"stop {victim}")
    started = time.monotonic()
    r = web.cli("upgrade", "--timeout", "3", "hello", str(PICKY))
    took = time.monotonic() - started
    with contextlib.suppress(ProcessLookupError):  # uvicorn's supervisor may have killed it
        os.kill(victim, signal.SIGCONT)
    assert r.returncode == ABORTED, (r.stdout, r.stderr)
    assert f"pid {victim}: no: did not answer within 3s" in r.stderr, r.stderr
    assert took < 60, took
    # Resumed, it finishes its prepare, reads the recorded abort and keeps v1 like the rest
    # (uvicorn's supervisor kills a worker that misses its health check: then its
    # replacement comes up at generation 0, like the rest).
    wait_for(lambda: len(web.worker_pids()) == 4, 60, what="four workers")
    wait_for(lambda: all(st["service"]["txn"] is None
                         for st in web.json("status")["workers"].values()),
             what="every worker out of the transaction")
    assert set(web.versions().values()) == {"1.0.0"}
    assert set(web.generations().values()) == {0}


def test_a_killed_worker_comes_back_at_the_current_generation(web: WebService) -> None:
    if web.kind != "gunicorn":
        pytest.skip("uvicorn --workers restarts a dead worker too, but on its own schedule")
    _upgrade_to(web, "v2")
    victim = web.worker_pids()[0]
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: victim not in web.worker_pids() and len(web.worker_pids()) == 4, 60,
             what="gunicorn replacing the killed worker")
    assert set(web.versions().values()) == {"2.0.0"}
    assert set(web.generations().values()) == {1}
    with Load(web.url, clients=4) as load:
        wait_for(lambda: load.count() > 40, what="requests")
    assert load.failures == [] and {rec[3] for rec in load.records} == {"v2"}
