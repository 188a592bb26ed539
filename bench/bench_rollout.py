"""A rollout across machines on a real etcd: how long it takes, what it does to request
latency, how fast a dead machine is noticed, and what an idle agent costs.

Run (from the repository root; needs etcd -- ``apt-get install -y etcd-server`` -- and the
``workers`` extra: gunicorn, uvicorn, httpx)::

    python bench/bench_rollout.py               # 5 machines x 2 workers, 3 rounds
    python bench/bench_rollout.py --machines 3 --rounds 1

Each "machine" is real gunicorn with 2 UvicornWorkers serving the example app, in a socket
folder of its own (its own ``XDG_RUNTIME_DIR``), with a ``livemod agent`` process; etcd
runs on 127.0.0.1 with a temporary data folder. 2 client threads per machine request
``GET /hello`` back to back. Each round has a quiet window and a rollout window of the
same length: ``livemod rollout upgrade hello v2 --batch 2`` (canary 1), then ``rollout
undo``, timed from the command's start to its exit (the interpreter start included).
Then one agent is killed with SIGKILL and the time until its machine key is gone is
measured (its lease is ``--ttl`` seconds); and the other agents' CPU and memory are read
from /proc over 10 idle seconds. Everything shares this box's cores: on 2 cores the
figures are pessimistic.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from etcd_support import EtcdServer  # noqa: E402
from web_service_support import MODULES, Load, WebService, wait_for  # noqa: E402

V2 = str(MODULES / "hello_v2.py")
LIVEMOD = [sys.executable, "-m", "livemod.cli"]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def machines(etcd: EtcdServer) -> dict[str, dict[str, object]]:
    from livemod.etcd import EtcdClient, Rollout

    return Rollout(EtcdClient(etcd.url), "web").machines()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--machines", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ttl", type=int, default=3)
    parser.add_argument("--verbose", action="store_true", help="print each rollout's lines")
    args = parser.parse_args()
    etcd = EtcdServer()
    services: list[WebService] = []
    agents: list[subprocess.Popen[str]] = []
    try:
        for i in range(args.machines):
            ws = WebService("gunicorn", workers=args.workers)
            services.append(ws)
            agent = subprocess.Popen(
                [*LIVEMOD, "agent", "--etcd", etcd.url, "--service", "web", "--machine",
                 f"m{i + 1}", "--ttl", str(args.ttl)], env=ws.env, cwd=ROOT,
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            assert agent.stdout is not None and agent.stdout.readline().startswith("agent")
            agents.append(agent)
        wait_for(lambda: len(machines(etcd)) == args.machines, 60, "the agents")
        print(f"{args.machines} machines x {args.workers} workers, etcd {etcd.url}")
        took: list[float] = []
        ratios: list[float] = []
        env = {k: v for k, v in os.environ.items() if k != "LIVEMOD_SOCKET"}
        loads = [Load(ws.url, clients=2) for ws in services]
        for load in loads:
            load.__enter__()
        try:
            for r in range(args.rounds):
                t0 = time.monotonic()
                changes = [("upgrade", "hello", V2, "--batch", "2"), ("undo", "--batch", "2")]
                for change in changes:
                    started = time.monotonic()
                    done = subprocess.run([*LIVEMOD, "rollout", "--etcd", etcd.url,
                                           "--service", "web", *change], env=env, cwd=ROOT,
                                          capture_output=True, text=True, timeout=300)
                    assert done.returncode == 0, (done.stdout, done.stderr)
                    took.append(time.monotonic() - started)
                    if args.verbose:
                        print(done.stdout, end="")
                busy_window = time.monotonic() - t0
                t1 = time.monotonic()
                time.sleep(busy_window)  # the quiet window, as long as the rollout one
                busy = [b - a for ld in loads for a, b, _, _ in ld.since(t0) if a < t1]
                quiet = [b - a for ld in loads for a, b, _, _ in ld.since(t1)]
                ratio = pct(busy, 0.99) / pct(quiet, 0.99)
                ratios.append(ratio)
                print(f"round {r + 1}: rollouts {took[-2]:.2f}s / {took[-1]:.2f}s; p99 "
                      f"during {pct(busy, 0.99) * 1000:.1f} ms, quiet "
                      f"{pct(quiet, 0.99) * 1000:.1f} ms (x{ratio:.2f}); p50 "
                      f"{pct(busy, 0.5) * 1000:.1f} / {pct(quiet, 0.5) * 1000:.1f} ms")
        finally:
            for load in loads:
                load.__exit__(None, None, None)
        failed = sum(len(ld.failures) for ld in loads)
        print(f"rollout (command start to exit): median {statistics.median(took):.2f}s, "
              f"max {max(took):.2f}s over {len(took)}; failed requests: {failed}")
        print(f"p99 during / quiet: median x{statistics.median(ratios):.2f}")
        before = {a.pid: cpu_seconds(a.pid) for a in agents[1:]}
        time.sleep(10)
        cpu = [(cpu_seconds(p) - c) / 10 * 100 for p, c in before.items()]
        rss = [rss_kib(p) for p in before]
        print(f"idle agent: CPU {statistics.median(cpu):.2f}% of a core (median), RSS "
              f"{statistics.median(rss) / 1024:.1f} MiB")
        agents[0].send_signal(signal.SIGKILL)
        killed = time.monotonic()
        wait_for(lambda: "m1" not in machines(etcd), 60, "m1's lease to expire")
        print(f"a killed agent's machine is gone after {time.monotonic() - killed:.2f}s "
              f"(lease {args.ttl}s)")
    finally:
        for a in agents:
            if a.poll() is None:
                a.terminate()
                a.wait(10)
        for ws in services:
            ws.stop()
        etcd.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
