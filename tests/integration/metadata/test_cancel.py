"""Cancelling runs."""

from __future__ import annotations

import pytest
from tests.integration.metadata.helpers import complete, lease, statuses, submit

from kiln.errors import NotFound
from kiln.scheduler import Scheduler


def test_cancelling_a_queued_run_cancels_everything_at_once(scheduler: Scheduler) -> None:
    view = submit(scheduler)
    cancelled = scheduler.cancel_run(view.run_id)
    assert cancelled.status == "cancelled" and cancelled.cancel_requested
    assert set(statuses(cancelled).values()) == {"cancelled"}
    assert cancelled.finished_at is not None
    assert scheduler.lease_next("r") is None


def test_a_running_job_is_told_through_its_heartbeat(scheduler: Scheduler) -> None:
    view = submit(scheduler)
    leased = lease(scheduler)
    flagged = scheduler.cancel_run(view.run_id)
    assert flagged.status == "running"
    assert statuses(flagged) == {"build": "running", "test": "cancelled", "deploy": "cancelled"}
    assert scheduler.heartbeat(leased.attempt_id, leased.lease_token).cancel_requested
    complete(scheduler, leased, "cancelled", "cancelled by the user")
    done = scheduler.get_run(view.run_id)
    assert done.status == "cancelled"
    assert done.jobs[0].attempts[0].status == "cancelled"


def test_a_job_that_finishes_despite_the_cancel_keeps_its_result(scheduler: Scheduler) -> None:
    view = submit(scheduler)
    leased = lease(scheduler)
    scheduler.cancel_run(view.run_id)
    complete(scheduler, leased, "success")
    done = scheduler.get_run(view.run_id)
    assert statuses(done)["build"] == "success"
    assert done.status == "cancelled"


def test_runs_being_cancelled_are_not_leased(scheduler: Scheduler) -> None:
    view = submit(scheduler, ["a"])
    other = submit(scheduler, ["b"])
    scheduler.cancel_run(view.run_id)
    assert lease(scheduler).run_id == other.run_id


def test_cancelling_a_finished_run_changes_nothing(scheduler: Scheduler) -> None:
    view = submit(scheduler, ["only"])
    complete(scheduler, lease(scheduler))
    before = scheduler.get_run(view.run_id)
    assert scheduler.cancel_run(view.run_id) == before
    assert before.status == "success" and not before.cancel_requested


def test_cancelling_an_unknown_run(scheduler: Scheduler) -> None:
    with pytest.raises(NotFound):
        scheduler.cancel_run("01NOSUCHRUN0000000000000000")
