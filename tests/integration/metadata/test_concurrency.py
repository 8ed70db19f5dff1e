"""Races: many leasers, several processes, cancels against completions, heartbeats against the janitor."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from tests.integration.metadata.helpers import TTL_S, FakeClock, complete, lease, statuses, submit

from kiln.errors import LeaseLost
from kiln.metadata.db import Database
from kiln.scheduler import LeasedJob, Scheduler

WORKER = Path(__file__).with_name("worker_process.py")


def _run_threads(count: int, target: Callable[[int], None]) -> None:
    """Start ``count`` threads at once on ``target(i)``; re-raise the first error."""
    barrier = threading.Barrier(count)

    def start(i: int) -> None:
        barrier.wait()
        target(i)

    with ThreadPoolExecutor(count) as pool:
        for future in [pool.submit(start, i) for i in range(count)]:
            future.result()


def test_threads_racing_for_leases_get_every_job_exactly_once(scheduler: Scheduler) -> None:
    job_ids = [submit(scheduler, ["only"]).jobs[0].job_id for _ in range(40)]
    leased: list[list[str]] = [[] for _ in range(8)]

    def runner(i: int) -> None:
        while (job := scheduler.lease_next(f"runner-{i}")) is not None:
            leased[i].append(job.job_id)
            complete(scheduler, job)

    _run_threads(8, runner)
    everything = [job_id for mine in leased for job_id in mine]
    assert sorted(everything) == sorted(job_ids)  # none twice, none missed
    assert all(r.status == "success" for r in scheduler.list_runs(limit=100))


@pytest.mark.postgres
def test_processes_racing_for_leases_on_postgresql_get_every_job_exactly_once(
    postgres_database_url: str, clock: FakeClock
) -> None:
    db = Database(postgres_database_url)
    job_ids = [submit(Scheduler(db, clock=clock), ["only"]).jobs[0].job_id for _ in range(60)]
    db.dispose()
    workers = [
        subprocess.Popen(
            [sys.executable, str(WORKER), "lease-all", postgres_database_url, f"proc-{i}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(4)
    ]
    results = [w.communicate(timeout=60) for w in workers]
    for worker, (_, stderr) in zip(workers, results, strict=True):
        assert worker.returncode == 0, stderr
    everything = [job_id for out, _ in results for job_id in json.loads(out)]
    assert sorted(everything) == sorted(job_ids)  # none twice, none missed


def test_two_processes_sharing_one_sqlite_file_never_see_database_is_locked(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    Database(url).migrate()
    workers = [
        subprocess.Popen(
            [sys.executable, str(WORKER), "submit-and-lease", url, f"proc-{i}", "15"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    results = [w.communicate(timeout=60) for w in workers]
    for worker, (_, stderr) in zip(workers, results, strict=True):
        assert worker.returncode == 0, stderr
    runs = [run_id for out, _ in results for run_id in json.loads(out)]
    assert len(set(runs)) == 30
    summaries = Scheduler(Database(url)).list_runs(limit=100)
    assert len(summaries) == 30 and {r.status for r in summaries} == {"success"}


def test_cancels_racing_completions_end_consistently(scheduler: Scheduler) -> None:
    runs = [submit(scheduler).run_id for _ in range(12)]
    leases = {job.run_id: job for job in (lease(scheduler, f"r{i}") for i in range(12))}

    def race(i: int) -> None:
        run_id = runs[i // 2]
        if i % 2:
            scheduler.cancel_run(run_id)
        else:
            complete(scheduler, leases[run_id])

    _run_threads(24, race)
    for run_id in runs:
        run = scheduler.get_run(run_id)
        assert run.status == "cancelled", run
        assert statuses(run) == {"build": "success", "test": "cancelled", "deploy": "cancelled"}


def test_heartbeats_racing_the_janitor_have_one_winner_each(scheduler: Scheduler, clock: FakeClock) -> None:
    for _ in range(10):
        submit(scheduler, ["only"])
    leased: list[LeasedJob] = [lease(scheduler, f"r{i}") for i in range(10)]
    clock.advance(TTL_S + 1)
    fenced: set[str] = set()
    reclaimed: set[str] = set()

    def race(i: int) -> None:
        if i < 10:
            try:
                scheduler.heartbeat(leased[i].attempt_id, leased[i].lease_token)
            except LeaseLost:
                fenced.add(leased[i].attempt_id)
        else:
            reclaimed.update(r.attempt_id for r in scheduler.reclaim_expired_leases())

    _run_threads(11, race)
    # Per attempt, exactly one side won: a reclaimed attempt's heartbeat is fenced (it came after),
    # and an attempt whose heartbeat landed first is not reclaimed (the guard re-checks expiry).
    assert fenced == reclaimed
    for job in leased:
        if job.attempt_id in reclaimed:
            with pytest.raises(LeaseLost):
                scheduler.heartbeat(job.attempt_id, job.lease_token)
        else:
            scheduler.heartbeat(job.attempt_id, job.lease_token)
