"""How fast does a kiln fleet hand out trivial jobs, and does the control plane slow down as history grows?

Part 1, scheduling: one ``kiln server`` on PostgreSQL and N ``kiln runner`` processes (N = 1, 2,
4, 8), each a real process with its sandbox, running single-step busybox jobs (``true``):

- ``idle pickup``: runners idle, one run submitted at a time: submit → start latency (the time
  from the run's creation to its job's lease, both stamped by the server), p50/p99;
- ``burst``: M one-job runs submitted at once: jobs/s from the first submission to the last
  finish, and submit → start latency (queueing included), p50/p99.

The reference is the scheduler itself: N threads calling ``Scheduler.lease_next`` and
``complete_attempt`` in-process on the same PostgreSQL, no HTTP, no sandbox: the queue's ceiling.
Ratios say what share of it the fleet reaches.

Part 2, control-plane latency under load with many rows: two servers side by side, one on an
empty database and one on ROWS jobs inserted directly in bulk (runs of 4 jobs, each job with an
attempt, a step, a log chunk and its history events), each polled by 8 idle runners (processes
asking for a job every 0.5 s, as a runner does), while the calls users and runners make are timed
on both in alternation: p50/p99 and the growth of p50 is the cost of stored history alone.

Every database is a throwaway one on ``KILN_TEST_POSTGRES_URL`` (default
``postgresql+psycopg://postgres@127.0.0.1:5432/test``). Seed 7 for the bulk rows. On the shared
2-core machine other work runs at the same time: compare ratios, not absolute figures.

Reproduce (as root, after ``bash scripts/setup.sh``)::

    .venv/bin/python bench/bench_scheduling.py                 # writes bench/results/scheduling.json
    .venv/bin/python bench/bench_scheduling.py --runners 1,2 --burst 20 --rows 10000   # quicker
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import random
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from psycopg.types.json import Jsonb
from sqlalchemy.engine import make_url

from kiln.api.access_models import TokenCreateIn
from kiln.api.models import CompleteIn, RunContextIn, SubmitIn
from kiln.metadata.auth import secret_digest
from kiln.metadata.db import Database
from kiln.metadata.ids import new_id
from kiln.metadata.tables import Attempt, Job, JobEvent, LogChunk, Run, Step
from kiln.runner import ControlPlaneClient
from kiln.scheduler import RunContext, Scheduler
from kiln.source import snapshot_source

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # for the fleet of the scale-out tests, which knows how to run one

from tests.e2e.scaleout.fleet import FINAL, Fleet, wait_for  # noqa: E402
from tests.fixtures.databases import ADMIN_URL, PostgresServer  # noqa: E402

RESULTS = REPO / "bench" / "results" / "scheduling.json"
POSTGRES = PostgresServer(ADMIN_URL)
WORKFLOW = "name: bench\njobs:\n  trivial:\n    image: busybox\n    steps:\n      - run: 'true'\n"


# -- plumbing -----------------------------------------------------------------------------------------


def _percentiles(samples_s: list[float]) -> dict[str, float]:
    ordered = sorted(samples_s)
    p99 = ordered[min(len(ordered) - 1, max(0, round(len(ordered) * 0.99) - 1))]
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 1),
        "p99_ms": round(p99 * 1000, 1),
        "n": len(ordered),
    }


@contextlib.contextmanager
def throwaway_database() -> Iterator[str]:
    """A new, empty PostgreSQL database for one measurement; dropped afterwards."""
    name = f"kiln_bench_{secrets.token_hex(4)}"
    url = POSTGRES.create_database(name)
    try:
        yield url
    finally:
        POSTGRES.drop_database(name)


@contextlib.contextmanager
def fleet_of(runners: int) -> Iterator[Fleet]:
    """A ``kiln server`` on a fresh database with ``runners`` registered runners and the tenants
    ``bench`` (the jobs) and ``idle`` (no jobs: the background pollers' tenant)."""
    with (
        throwaway_database() as url,
        tempfile.TemporaryDirectory(prefix="kiln-bench-") as tmp,
        Fleet(Path(tmp), url, lease_ttl_s=30, tenants=("bench", "idle")) as fleet,
    ):
        for i in range(runners):
            fleet.start_runner(f"r{i}")
        wait_for(
            lambda: sum(t.kind == "runner" for t in fleet.admin.list_tokens()) >= runners, 120, "the runners"
        )
        yield fleet


def _source(client: ControlPlaneClient, tmp: Path) -> str:
    root = tmp / "source"
    root.mkdir(exist_ok=True)
    (root / "kiln.yml").write_text(WORKFLOW)
    snap = snapshot_source(root, tmp / "spool")
    client.upload_source(snap.info.digest, snap.archive)
    return snap.info.digest


def _submit(client: ControlPlaneClient, digest: str) -> str:
    body = SubmitIn(
        context=RunContextIn(tenant="bench", repo="bench"), workflow_text=WORKFLOW, source_digest=digest
    )
    return client.submit(body).run_id


def _pickup_s(client: ControlPlaneClient, run_id: str) -> float | None:
    run = client.get_run(run_id)
    if run.status not in FINAL:
        return None
    started = run.jobs[0].attempts[0].started_at
    assert started is not None and run.status == "success", run
    return (started - run.created_at).total_seconds()


# -- part 1: scheduling with N runners ------------------------------------------------------------------


def bench_fleet(runners: int, burst: int, idle_samples: int) -> dict[str, Any]:
    with fleet_of(runners) as fleet:
        client = fleet.user("bench")
        digest = _source(client, fleet.tmp)
        warm = [_submit(client, digest) for _ in range(runners)]  # every runner fetches the source once
        for run_id in warm:
            wait_for(lambda r=run_id: _pickup_s(client, r) is not None, 120, "warm-up", every=0.05)

        idle = []
        for _ in range(idle_samples):
            run_id = _submit(client, digest)
            idle.append(wait_for(lambda r=run_id: _pickup_s(client, r), 60, "an idle pickup", every=0.05))

        started = time.monotonic()
        with ThreadPoolExecutor(4) as pool:
            run_ids = list(pool.map(lambda _: _submit(client, digest), range(burst)))
        latencies = [
            wait_for(lambda r=run_id: _pickup_s(client, r), 600, "the burst", every=0.05)
            for run_id in run_ids
        ]
        elapsed = time.monotonic() - started
    return {
        "runners": runners,
        "idle_pickup": _percentiles(idle),
        "burst": {"jobs": burst, "seconds": round(elapsed, 2), "jobs_per_s": round(burst / elapsed, 2)},
        "burst_submit_to_start": _percentiles(latencies),
    }


def bench_scheduler_ceiling(workers: int, jobs: int) -> dict[str, Any]:
    """Lease + complete in ``workers`` threads in-process: what the queue itself sustains."""
    with throwaway_database() as url:
        db = Database(url)
        db.migrate()
        scheduler = Scheduler(db)
        ctx = RunContext(tenant="bench", repo="bench", ref="main")
        for _ in range(jobs):
            scheduler.submit_run(
                ctx,
                workflow_name="bench",
                jobs=[("trivial", {"image": "busybox", "steps": [{"run": "true"}]})],
                workflow_json={},
                workflow_text=WORKFLOW,
                source_digest="sha256:" + "0" * 64,
            )
        done = []

        def work(i: int) -> None:
            while (leased := scheduler.lease_next(f"w{i}")) is not None:
                scheduler.complete_attempt(leased.attempt_id, leased.lease_token, status="success")
                done.append(1)

        started = time.monotonic()
        threads = [threading.Thread(target=work, args=(i,)) for i in range(workers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - started
        db.dispose()
    assert len(done) == jobs
    return {"workers": workers, "jobs": jobs, "jobs_per_s": round(jobs / elapsed, 1)}


# -- part 2: control-plane latency with many stored rows ------------------------------------------------


def bulk_insert_history(url: str, rows: int, seed: int = 7) -> dict[str, Any]:
    """Insert ``rows`` finished jobs (runs of 4) with their attempts, steps, logs and events via COPY."""
    rng = random.Random(seed)
    started = time.monotonic()
    tenants = 10
    now = datetime.now(UTC)
    with POSTGRES.connect(make_url(url).database) as conn:
        tenant_ids = [
            conn.execute("INSERT INTO tenants (name) VALUES (%s) RETURNING id", (f"history-{i}",)).fetchone()[
                0
            ]
            for i in range(tenants)
        ]
        repo_ids = [
            conn.execute(
                "INSERT INTO repositories (tenant_id, name) VALUES (%s, %s) RETURNING id",
                (tenant_ids[i % tenants], f"repo-{i}"),
            ).fetchone()[0]
            for i in range(10 * tenants)
        ]
        runs, jobs, attempts, steps, logs, events = [], [], [], [], [], []
        spec = Jsonb({"image": "busybox", "steps": [{"run": "true"}]})
        for r in range(rows // 4):
            created = now - timedelta(seconds=rows - 4 * r)
            run_id = new_id(created)
            repo = rng.randrange(len(repo_ids))
            runs.append(
                (
                    run_id,
                    tenant_ids[repo % tenants],
                    repo_ids[repo],
                    "history",
                    Jsonb({}),
                    WORKFLOW,
                    "sha256:" + "1" * 64,
                    "main",
                    "main",
                    "push",
                    None,
                    False,
                    Jsonb(["main"]),
                    "protected",
                    "success",
                    None,
                    created,
                    created,
                    created + timedelta(seconds=2),
                    False,
                )
            )
            events.append((run_id, None, None, "run", None, "queued", "submitted", created, None))
            for position in range(4):
                at = created + timedelta(milliseconds=100 * position)
                job_id, attempt_id = new_id(at), new_id(at)
                jobs.append(
                    (job_id, run_id, position, f"job{position}", spec, "success", 1, 3, created, at, at, None)
                )
                attempts.append(
                    (
                        attempt_id,
                        job_id,
                        1,
                        "history-runner",
                        secret_digest(secrets.token_hex(8)),
                        at,
                        "success",
                        at,
                        at,
                        None,
                        "busybox",
                        "sha256:" + "2" * 64,
                        None,
                    )
                )
                steps.append((attempt_id, 0, "true", "success", 0, None, None, at, at, 0.01))
                logs.append((run_id, attempt_id, 0, 0, f"job{position} ran\n", at))
                events.append((run_id, job_id, attempt_id, "job", "queued", "running", "leased", at, None))
                events.append(
                    (run_id, job_id, attempt_id, "attempt", "running", "success", "succeeded", at, None)
                )
        with conn.cursor() as cur:
            for model, data in [
                (Run, runs),
                (Job, jobs),
                (Attempt, attempts),
                (Step, steps),
                (LogChunk, logs),
                (JobEvent, events),
            ]:
                # Rows are tuples in the mapping's column order; generated ids are left to the database.
                table = model.__table__
                names = [c.name for c in table.columns if not (c.primary_key and c.autoincrement is True)]
                columns = ", ".join(names)
                with cur.copy(f"COPY {table.name} ({columns}) FROM STDIN") as copy:
                    for row in data:
                        copy.write_row(row)
            cur.execute("ANALYZE")
        counts = {
            table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in ("runs", "jobs", "attempts", "steps", "log_chunks", "job_events")
        }
    return {"seconds": round(time.monotonic() - started, 1), "rows": counts}


def _poll(url: str, token: str, name: str, every_s: float, stop: Any) -> None:
    """One idle runner: register, then ask for a job every ``every_s`` until ``stop`` is set."""
    client = ControlPlaneClient(url, token, retry_deadline_s=30)
    registered = client.register_runner(name, [])
    runner = client.with_token(registered.token)
    while not stop.wait(every_s):
        runner.lease(registered.runner_id)


class _Pollers:
    """Idle runners' worth of background load, in processes of their own (not this one's GIL)."""

    def __init__(self, targets: list[tuple[str, str]], count: int, every_s: float = 0.5) -> None:
        context = multiprocessing.get_context("spawn")
        self._stop = context.Event()
        self._procs = [
            context.Process(target=_poll, args=(url, token, f"poller-{i}", every_s, self._stop), daemon=True)
            for url, token in targets
            for i in range(count)
        ]

    def __enter__(self) -> _Pollers:
        for proc in self._procs:
            proc.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for proc in self._procs:
            proc.join(30)


class _Endpoints:
    """The requests measured on one server: what a user and a runner call most."""

    def __init__(self, fleet: Fleet, digest: str) -> None:
        self.client = fleet.user("bench")
        self.digest = digest
        registered = ControlPlaneClient(fleet.url, fleet.registration).register_runner("measurer", [])
        self.runner_id = registered.runner_id
        self.runner = ControlPlaneClient(fleet.url, registered.token, retry_deadline_s=30)
        self.run_id = _submit(self.client, digest)
        lease = self.runner.lease(self.runner_id, run_id=self.run_id)
        assert lease is not None
        self.lease = lease

    def cycle(self) -> None:
        """A whole job's worth of control-plane calls, without the sandbox."""
        run_id = _submit(self.client, self.digest)
        leased = self.runner.lease(self.runner_id, run_id=run_id)
        assert leased is not None
        self.runner.heartbeat(leased.attempt_id, leased.lease_token)
        self.runner.complete(leased.attempt_id, leased.lease_token, CompleteIn(status="success"))

    def calls(self) -> dict[str, Callable[[], object]]:
        return {
            "GET /v1/runs?limit=50": lambda: self.client.list_runs(limit=50),
            "GET /v1/runs/{id}": lambda: self.client.get_run(self.run_id),
            "GET /v1/runs/{id}/logs": lambda: self.client.logs(self.run_id),
            "POST /v1/lease (nothing queued)": lambda: self.runner.lease(self.runner_id),
            "POST /v1/attempts/{id}/heartbeat": lambda: self.runner.heartbeat(
                self.lease.attempt_id, self.lease.lease_token
            ),
            "submit + lease + heartbeat + complete": self.cycle,
        }


def bench_history(rows: int, samples: int, pollers: int) -> dict[str, Any]:
    """Two servers side by side, one on an empty database and one on ``rows`` stored jobs, measured
    in alternation so that whatever else the machine does weighs on both alike."""
    with fleet_of(0) as empty, fleet_of(0) as full:
        inserted = bulk_insert_history(full.database_url, rows)
        endpoints = {}
        targets = []
        for name, fleet in (("empty", empty), ("full", full)):
            endpoints[name] = _Endpoints(fleet, _source(fleet.user("bench"), fleet.tmp))
            polling = TokenCreateIn(kind="registration", tenant="idle", name="pollers")
            targets.append((fleet.url, fleet.admin.create_token(polling).token))
        samples_s: dict[str, dict[str, list[float]]] = {"empty": {}, "full": {}}
        with _Pollers(targets, pollers):
            for fleet in (empty, full):  # every poller has registered and is polling
                wait_for(
                    lambda f=fleet: (
                        sum(t.tenant == "idle" and t.kind == "runner" for t in f.admin.list_tokens())
                        >= pollers
                    ),
                    120,
                    "the pollers",
                )
            time.sleep(2)
            for call in endpoints["empty"].calls():
                rounds = samples if call.startswith(("GET", "POST")) else max(10, samples // 4)
                for _ in range(rounds):
                    for name in ("empty", "full"):
                        fn = endpoints[name].calls()[call]
                        start = time.perf_counter()
                        fn()
                        samples_s[name].setdefault(call, []).append(time.perf_counter() - start)
    result = {
        name: {call: _percentiles(s) for call, s in by_call.items()} for name, by_call in samples_s.items()
    }
    growth = {
        call: round(result["full"][call]["p50_ms"] / max(result["empty"][call]["p50_ms"], 0.01), 2)
        for call in result["empty"]
    }
    return {
        "rows_inserted": inserted,
        "background_pollers_per_server": pollers,
        "empty": result["empty"],
        f"with_{rows}_jobs": result["full"],
        "p50_growth": growth,
    }


# -- the run ----------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runners", default="1,2,4,8", help="runner counts to measure")
    parser.add_argument("--burst", type=int, default=48, help="one-job runs submitted at once")
    parser.add_argument("--idle", type=int, default=10, help="idle pickups measured")
    parser.add_argument("--rows", type=int, default=100_000, help="jobs of stored history for part 2")
    parser.add_argument("--samples", type=int, default=100, help="requests per endpoint in part 2")
    parser.add_argument("--pollers", type=int, default=8, help="idle runners polling during part 2")
    args = parser.parse_args()
    counts = [int(n) for n in args.runners.split(",")]

    fleet = []
    for n in counts:
        print(f"fleet with {n} runner(s)…", file=sys.stderr, flush=True)
        fleet.append(bench_fleet(n, args.burst, args.idle))
        print(json.dumps(fleet[-1]), file=sys.stderr, flush=True)
    ceiling = [bench_scheduler_ceiling(n, 200) for n in counts]
    for row, ref in zip(fleet, ceiling, strict=True):
        row["scheduler_ceiling_jobs_per_s"] = ref["jobs_per_s"]
        row["share_of_ceiling"] = round(row["burst"]["jobs_per_s"] / ref["jobs_per_s"], 3)
        row["speedup_vs_1_runner"] = round(row["burst"]["jobs_per_s"] / fleet[0]["burst"]["jobs_per_s"], 2)
    print(f"control plane with {args.rows} stored jobs…", file=sys.stderr, flush=True)
    history = bench_history(args.rows, args.samples, args.pollers)

    result = {
        "git": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip(),
        "machine": {"cpus": os.cpu_count(), "host": socket.gethostname()},
        "params": vars(args),
        "scheduling": fleet,
        "control_plane": history,
        "note": "shared 2-core machine with other work running: compare ratios, not absolute figures",
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")

    header = ("runners", "jobs/s", "x1", "ceiling", "idle p50/p99 ms", "burst p50/p99 ms")
    print("{:>7}  {:>7}  {:>5}  {:>8}  {:>16}  {:>17}".format(*header))
    for row in fleet:
        idle, burst = row["idle_pickup"], row["burst_submit_to_start"]
        print(
            f"{row['runners']:>7}  {row['burst']['jobs_per_s']:>7}  {row['speedup_vs_1_runner']:>5}  "
            f"{row['scheduler_ceiling_jobs_per_s']:>8}  {idle['p50_ms']:>7}/{idle['p99_ms']:<8}  "
            f"{burst['p50_ms']:>8}/{burst['p99_ms']:<8}"
        )
    print(f"\n{'request':<40}  {'empty p50/p99 ms':>17}  {f'{args.rows} jobs p50/p99':>20}  growth")
    full = history[f"with_{args.rows}_jobs"]
    for name, before in history["empty"].items():
        after = full[name]
        was, now = f"{before['p50_ms']}/{before['p99_ms']}", f"{after['p50_ms']}/{after['p99_ms']}"
        print(f"{name:<40}  {was:>17}  {now:>20}  {history['p50_growth'][name]}x")
    print(f"\nwrote {RESULTS}")


if __name__ == "__main__":
    main()
