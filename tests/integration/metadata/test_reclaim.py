"""The janitor's reclaim of expired leases: lost attempts, retries, exhaustion and fencing."""

from __future__ import annotations

import pytest
from tests.integration.metadata.helpers import TTL_S, FakeClock, complete, lease, statuses, submit

from kiln.errors import LeaseLost
from kiln.scheduler import LogChunk, Scheduler


def test_an_expired_lease_is_reclaimed_and_the_job_requeued_with_its_logs_kept(
    scheduler: Scheduler, clock: FakeClock
) -> None:
    view = submit(scheduler)
    first = lease(scheduler, "doomed")
    scheduler.append_logs(first.attempt_id, first.lease_token, [LogChunk(0, 0, "compiling…\n")])
    clock.advance(TTL_S + 1)
    reclaimed = scheduler.reclaim_expired_leases()
    assert [(r.job_name, r.attempt_number, r.runner_id, r.job_status) for r in reclaimed] == [
        ("build", 1, "doomed", "queued")
    ]
    assert reclaimed[0].lease_expired_at == first.lease_expires_at
    assert scheduler.reclaim_expired_leases() == []  # done once

    second = lease(scheduler, "healthy")
    assert (second.job_name, second.attempt_number) == ("build", 2)
    scheduler.append_logs(second.attempt_id, second.lease_token, [LogChunk(0, 0, "compiling again\n")])
    complete(scheduler, second)
    run = scheduler.get_run(view.run_id)
    assert [(a.number, a.status) for a in run.jobs[0].attempts] == [(1, "lost"), (2, "success")]
    assert "lease expired" in (run.jobs[0].attempts[0].error_message or "")
    assert statuses(run)["build"] == "success" and statuses(run)["test"] == "queued"
    lines = scheduler.get_logs(view.run_id).lines
    assert [(line.attempt_number, line.data) for line in lines] == [
        (1, "compiling…\n"),
        (2, "compiling again\n"),
    ]


def test_a_late_runner_is_fenced_after_reclaim(scheduler: Scheduler, clock: FakeClock) -> None:
    view = submit(scheduler)
    late = lease(scheduler, "late")
    clock.advance(TTL_S + 1)
    scheduler.reclaim_expired_leases()
    for call in (
        lambda: scheduler.heartbeat(late.attempt_id, late.lease_token),
        lambda: scheduler.append_logs(late.attempt_id, late.lease_token, [LogChunk(5, None, "zombie\n")]),
        lambda: scheduler.step_started(late.attempt_id, late.lease_token, 0, "s"),
        lambda: scheduler.report_image(late.attempt_id, late.lease_token, "x", "sha256:x"),
        lambda: complete(scheduler, late),
    ):
        with pytest.raises(LeaseLost, match="lost: its lease has ended"):
            call()
    run = scheduler.get_run(view.run_id)
    assert run.jobs[0].status == "queued" and run.jobs[0].attempts[0].status == "lost"
    assert scheduler.get_logs(view.run_id).lines == ()


def test_attempts_are_bounded_then_the_job_errors(scheduler: Scheduler, clock: FakeClock) -> None:
    view = submit(scheduler)
    for attempt in (1, 2, 3):
        leased = lease(scheduler)
        assert leased.attempt_number == attempt
        clock.advance(TTL_S + 1)
        (reclaimed,) = scheduler.reclaim_expired_leases()
        assert reclaimed.job_status == ("queued" if attempt < 3 else "error")
    run = scheduler.get_run(view.run_id)
    assert run.status == "error"
    assert statuses(run) == {"build": "error", "test": "skipped", "deploy": "skipped"}
    assert (run.jobs[0].error_message or "").startswith("lost 3 times")
    assert scheduler.lease_next("r") is None


def test_a_lease_that_has_not_expired_is_left_alone(scheduler: Scheduler, clock: FakeClock) -> None:
    submit(scheduler)
    leased = lease(scheduler)
    clock.advance(TTL_S)  # exactly at expiry: not before now yet
    assert scheduler.reclaim_expired_leases() == []
    scheduler.heartbeat(leased.attempt_id, leased.lease_token)


def test_a_dry_run_changes_nothing(scheduler: Scheduler, clock: FakeClock) -> None:
    view = submit(scheduler)
    leased = lease(scheduler)
    clock.advance(TTL_S + 1)
    (planned,) = scheduler.reclaim_expired_leases(dry_run=True)
    assert planned.dry_run and planned.job_status == "queued"
    assert scheduler.get_run(view.run_id).jobs[0].attempts[0].status == "running"
    scheduler.heartbeat(leased.attempt_id, leased.lease_token)  # still the runner's


def test_a_lost_job_of_a_cancelled_run_is_cancelled(scheduler: Scheduler, clock: FakeClock) -> None:
    view = submit(scheduler)
    lease(scheduler)
    scheduler.cancel_run(view.run_id)
    clock.advance(TTL_S + 1)
    (reclaimed,) = scheduler.reclaim_expired_leases()
    assert reclaimed.job_status == "cancelled"
    run = scheduler.get_run(view.run_id)
    assert run.status == "cancelled"
    assert statuses(run) == {"build": "cancelled", "test": "cancelled", "deploy": "cancelled"}
