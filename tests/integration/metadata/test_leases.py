"""Leasing: file order, run filtering, heartbeats and fencing by token."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select
from tests.integration.metadata.helpers import TTL_S, FakeClock, complete, lease, statuses, submit

from kiln.errors import LeaseLost
from kiln.metadata.db import Database
from kiln.metadata.tables import Runner
from kiln.scheduler import LeasedJob, LogChunk, Scheduler


def test_jobs_run_one_after_another_in_file_order(scheduler: Scheduler) -> None:
    view = submit(scheduler)
    first = lease(scheduler)
    assert first.job_name == "build"
    assert scheduler.lease_next("runner-2") is None  # test waits for build
    complete(scheduler, first)
    assert statuses(scheduler.get_run(view.run_id))["test"] == "queued"
    second = lease(scheduler, "runner-2")
    assert second.job_name == "test"
    complete(scheduler, second)
    third = lease(scheduler)
    assert third.job_name == "deploy"
    complete(scheduler, third)
    done = scheduler.get_run(view.run_id)
    assert done.status == "success"
    assert statuses(done) == {"build": "success", "test": "success", "deploy": "success"}


def test_a_lease_carries_what_the_runner_needs(scheduler: Scheduler, clock: FakeClock) -> None:
    view = submit(scheduler, ref="feature")
    leased = lease(scheduler, "runner-7")
    assert (leased.run_id, leased.job_id) == (view.run_id, view.jobs[0].job_id)
    assert (leased.job_name, leased.attempt_number) == ("build", 1)
    assert leased.spec == {"steps": [{"run": "make build"}]}
    assert leased.workflow_env == {"CI": "true"}
    assert (leased.workflow_name, leased.source_digest) == ("ci", "sha256:" + "0" * 64)
    assert (leased.context.tenant, leased.context.repo, leased.context.ref) == ("acme", "web", "feature")
    assert leased.trust_tier == "branch"
    assert leased.lease_expires_at == view.created_at + timedelta(seconds=TTL_S)
    assert len(leased.lease_token) >= 32
    run = scheduler.get_run(view.run_id)
    assert run.status == "running" and run.started_at == view.created_at
    assert run.jobs[0].attempts[0].runner_id == "runner-7"


def test_the_oldest_run_is_served_first(scheduler: Scheduler, clock: FakeClock) -> None:
    older = submit(scheduler, ["only"])
    clock.advance(1)
    submit(scheduler, ["only"])
    assert lease(scheduler).run_id == older.run_id


def test_run_id_restricts_leasing_to_one_run(scheduler: Scheduler, clock: FakeClock) -> None:
    older = submit(scheduler, ["only"])
    clock.advance(1)
    mine = submit(scheduler, ["only"])
    assert lease(scheduler, "embedded", run_id=mine.run_id).run_id == mine.run_id
    assert scheduler.lease_next("embedded", run_id=mine.run_id) is None
    assert lease(scheduler, "fleet").run_id == older.run_id
    assert scheduler.lease_next("embedded", run_id="01NOSUCHRUN0000000000000000") is None


def test_a_heartbeat_extends_the_lease(scheduler: Scheduler, clock: FakeClock) -> None:
    submit(scheduler)
    leased = lease(scheduler)
    clock.advance(20)
    beat = scheduler.heartbeat(leased.attempt_id, leased.lease_token)
    assert beat.expires_at == leased.lease_expires_at + timedelta(seconds=20)
    assert beat.cancel_requested is False
    clock.advance(20)  # past the first expiry, within the extended one
    assert scheduler.reclaim_expired_leases() == []


def _runner_calls(scheduler: Scheduler, leased: LeasedJob, token: str) -> list:
    return [
        lambda: scheduler.heartbeat(leased.attempt_id, token),
        lambda: scheduler.append_logs(leased.attempt_id, token, [LogChunk(0, None, "x")]),
        lambda: scheduler.step_started(leased.attempt_id, token, 0, "build"),
        lambda: scheduler.step_finished(
            leased.attempt_id,
            token,
            0,
            status="skipped",
            exit_code=None,
            signal=None,
            killed_by=None,
            duration_s=0,
        ),
        lambda: scheduler.report_image(leased.attempt_id, token, "busybox", "sha256:1"),
        lambda: scheduler.complete_attempt(leased.attempt_id, token, status="success"),
    ]


def test_a_wrong_token_is_fenced_everywhere(scheduler: Scheduler) -> None:
    view = submit(scheduler)
    leased = lease(scheduler)
    for call in _runner_calls(scheduler, leased, "not-the-token"):
        with pytest.raises(LeaseLost, match="token does not match"):
            call()
    job = scheduler.get_run(view.run_id).jobs[0]
    assert job.status == "running" and job.attempts[0].steps == () and job.image_digest is None
    assert scheduler.get_logs(view.run_id).lines == ()


def test_an_unknown_attempt_is_fenced(scheduler: Scheduler) -> None:
    with pytest.raises(LeaseLost, match="does not exist"):
        scheduler.heartbeat("01NOSUCHATTEMPT000000000000", "t")
    with pytest.raises(LeaseLost, match="does not exist"):
        scheduler.complete_attempt("01NOSUCHATTEMPT000000000000", "t", status="success")


def test_a_completed_attempt_has_no_lease_left(scheduler: Scheduler) -> None:
    submit(scheduler)
    leased = lease(scheduler)
    complete(scheduler, leased)
    with pytest.raises(LeaseLost, match="its lease has ended"):
        scheduler.heartbeat(leased.attempt_id, leased.lease_token)
    with pytest.raises(LeaseLost):
        scheduler.append_logs(leased.attempt_id, leased.lease_token, [LogChunk(0, None, "late")])


def test_leasing_never_reclaims_expired_leases(scheduler: Scheduler, clock: FakeClock) -> None:
    view = submit(scheduler, ["only"])
    leased = lease(scheduler)
    clock.advance(TTL_S * 10)
    assert scheduler.lease_next("runner-2") is None  # only the janitor reclaims
    assert scheduler.get_run(view.run_id).jobs[0].attempts[0].status == "running"
    # Not reclaimed yet, so still the runner's: a late heartbeat revives it.
    scheduler.heartbeat(leased.attempt_id, leased.lease_token)
    assert scheduler.reclaim_expired_leases() == []


def test_runners_are_registered_when_first_seen(scheduler: Scheduler, database: Database) -> None:
    assert scheduler.lease_next("idle-runner") is None
    submit(scheduler)
    leased = lease(scheduler, "busy-runner")
    scheduler.heartbeat(leased.attempt_id, leased.lease_token)
    with database.read_session() as session:
        assert sorted(session.execute(select(Runner.id)).scalars()) == ["busy-runner", "idle-runner"]
