"""Runners that die or vanish mid-job, on PostgreSQL: the job finishes elsewhere, the late are fenced.

* SIGKILL: the lease expires, the janitor marks the attempt ``lost`` (its logs kept), and another
  runner runs the job to the end.
* SIGSTOP (a runner that hangs, or a machine cut off): the same, and when the paused runner comes
  back it can neither write a log line nor complete its old attempt; it stops the job's sandbox
  and goes back to leasing.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from sqlalchemy import text
from tests.e2e.scaleout.fleet import Fleet, wait_for

from kiln.metadata.db import Database

pytestmark = [pytest.mark.sandbox, pytest.mark.postgres]

# The first attempt prints ticks forever (so it can be killed or paused mid-job); later ones finish.
WORKFLOW = """
name: crash
jobs:
  prepare:
    image: busybox
    steps:
      - run: echo prepared
  flaky:
    image: busybox
    steps:
      - run: |
          if [ "$KILN_ATTEMPT" = 1 ]; then
            echo started-first-attempt
            i=0; while true; do i=$((i+1)); echo "tick $i"; sleep 0.2; done
          fi
          echo finished-attempt-$KILN_ATTEMPT
"""


@pytest.fixture
def fleet(postgres_database_url: str, tmp_path: Path):
    with Fleet(tmp_path, postgres_database_url, lease_ttl_s=3, tenants=("acme",)) as running:
        yield running


def _first_attempt_started(fleet: Fleet, run_id: str) -> bool:
    lines = fleet.user("acme").logs(run_id).lines
    return any(line.job == "flaky" and "tick 3" in line.data for line in lines)


def test_a_killed_runners_job_finishes_on_another_runner(fleet: Fleet):
    run = fleet.submit("acme", WORKFLOW)
    doomed = fleet.start_runner("doomed")
    wait_for(lambda: _first_attempt_started(fleet, run.run_id), 60, "the first attempt to start")
    doomed.send_signal(signal.SIGKILL)
    doomed.wait()
    fleet.start_runner("survivor")
    final = fleet.wait_final(run.run_id, timeout=90)

    assert final.status == "success"
    flaky = final.jobs[1]
    assert [(a.status, a.runner_id) for a in flaky.attempts] == [("lost", "doomed"), ("success", "survivor")]
    assert "lease expired" in (flaky.attempts[0].error_message or "")
    lines = fleet.user("acme").logs(run.run_id).lines
    assert any(line.attempt_number == 1 and "started-first-attempt" in line.data for line in lines)
    assert any(line.attempt_number == 2 and "finished-attempt-2" in line.data for line in lines)


def test_a_runner_that_comes_back_late_is_fenced(fleet: Fleet):
    run = fleet.submit("acme", WORKFLOW)
    late = fleet.start_runner("late")
    wait_for(lambda: _first_attempt_started(fleet, run.run_id), 60, "the first attempt to start")
    os.kill(late.pid, signal.SIGSTOP)  # frozen: no heartbeat, no log, no completion
    try:
        fleet.start_runner("other")
        final = fleet.wait_final(run.run_id, timeout=90)
    finally:
        os.kill(late.pid, signal.SIGCONT)
    assert final.status == "success"
    flaky = final.jobs[1]
    assert [(a.status, a.runner_id) for a in flaky.attempts] == [("lost", "late"), ("success", "other")]

    # Back, the late runner finds its lease gone: it stops the job and writes nothing more for it.
    wait_for(
        lambda: "lease" in fleet.logs("late") and "job flaky of run" in fleet.logs("late"),
        30,
        "the late runner",
    )
    db = Database(fleet.database_url)
    try:
        with db.read_session() as session:
            late_writes = session.execute(
                text(
                    "SELECT count(*) FROM log_chunks c JOIN attempts a ON a.id = c.attempt_id "
                    "WHERE c.attempt_id = :attempt AND c.created_at > a.finished_at"
                ),
                {"attempt": wait_for(lambda: _attempt_id(db, run.run_id, 1), 5, "the attempt")},
            ).scalar_one()
            steps = session.execute(
                text(
                    "SELECT count(*) FROM steps s JOIN attempts a ON a.id = s.attempt_id "
                    "WHERE a.runner_id = 'late'"
                )
            ).scalar_one()
    finally:
        db.dispose()
    assert late_writes == 0
    assert steps >= 1  # what it reported before the pause is kept
    assert fleet.admin.get_run(run.run_id).jobs[1].attempts[0].status == "lost"  # never completed
    assert late.poll() is None  # and it carries on as a runner


def _attempt_id(db: Database, run_id: str, number: int) -> str | None:
    with db.read_session() as session:
        return session.execute(
            text(
                "SELECT a.id FROM attempts a JOIN jobs j ON j.id = a.job_id "
                "WHERE j.run_id = :run AND j.name = 'flaky' AND a.number = :n"
            ),
            {"run": run_id, "n": number},
        ).scalar_one_or_none()
