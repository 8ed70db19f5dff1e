"""Completing attempts: job outcomes, skipping, run outcomes, steps, images and history."""

from __future__ import annotations

import pytest
from tests.integration.metadata.helpers import FakeClock, complete, lease, statuses, submit

from kiln.errors import IllegalTransition, UsageError
from kiln.metadata.db import Database
from kiln.metadata.events import list_events
from kiln.scheduler import Scheduler, attempt_states, job_states, run_states, step_states


def test_a_failed_job_skips_every_later_job_and_fails_the_run(scheduler: Scheduler, clock: FakeClock) -> None:
    view = submit(scheduler)
    leased = lease(scheduler)
    clock.advance(12.5)
    complete(scheduler, leased, "failed", "step 'make' exited 2")
    run = scheduler.get_run(view.run_id)
    assert run.status == "failed"
    assert statuses(run) == {"build": "failed", "test": "skipped", "deploy": "skipped"}
    build, test, _ = run.jobs
    assert build.error_message == "step 'make' exited 2"
    assert build.duration_s == 12.5
    assert build.attempts[0].status == "failed" and build.attempts[0].error_message == "step 'make' exited 2"
    assert test.error_message == "skipped because job 'build' ended failed"
    assert run.finished_at is not None
    assert scheduler.lease_next("r") is None


def test_an_error_makes_the_run_error(scheduler: Scheduler) -> None:
    view = submit(scheduler)
    complete(scheduler, lease(scheduler))
    complete(scheduler, lease(scheduler), "error", "sandbox: overlayfs unavailable")
    run = scheduler.get_run(view.run_id)
    assert run.status == "error"
    assert statuses(run) == {"build": "success", "test": "error", "deploy": "skipped"}


def test_completing_twice_with_the_same_status_is_a_no_op(scheduler: Scheduler, database: Database) -> None:
    view = submit(scheduler, ["only"])
    leased = lease(scheduler)
    complete(scheduler, leased)
    with database.read_session() as session:
        history = list_events(session, view.run_id)
    complete(scheduler, leased)  # the runner retrying after a lost response
    with database.read_session() as session:
        assert list_events(session, view.run_id) == history
    with pytest.raises(IllegalTransition):
        complete(scheduler, leased, "failed")
    assert scheduler.get_run(view.run_id).status == "success"


def test_an_unknown_status_is_refused(scheduler: Scheduler) -> None:
    submit(scheduler)
    leased = lease(scheduler)
    with pytest.raises(UsageError, match="unknown attempt status"):
        complete(scheduler, leased, "lost")
    with pytest.raises(UsageError, match="unknown step status"):
        scheduler.step_finished(
            leased.attempt_id,
            leased.lease_token,
            0,
            status="ok",
            exit_code=0,
            signal=None,
            killed_by=None,
            duration_s=0,
        )


def test_steps_are_recorded_and_idempotent(scheduler: Scheduler) -> None:
    view = submit(scheduler, ["only"])
    leased = lease(scheduler)
    a, t = leased.attempt_id, leased.lease_token
    scheduler.step_started(a, t, 0, "compile")
    scheduler.step_started(a, t, 0, "compile")  # retried
    scheduler.step_finished(
        a, t, 0, status="success", exit_code=0, signal=None, killed_by=None, duration_s=1.25
    )
    scheduler.step_finished(
        a, t, 0, status="success", exit_code=0, signal=None, killed_by=None, duration_s=1.25
    )
    scheduler.step_started(a, t, 1, "test")
    scheduler.step_finished(
        a, t, 1, status="failed", exit_code=None, signal=9, killed_by="timeout", duration_s=30
    )
    scheduler.step_finished(
        a, t, 2, status="skipped", exit_code=None, signal=None, killed_by=None, duration_s=0, name="upload"
    )
    with pytest.raises(IllegalTransition):  # a step must start before it can succeed
        scheduler.step_finished(
            a, t, 3, status="success", exit_code=0, signal=None, killed_by=None, duration_s=0
        )
    with pytest.raises(IllegalTransition):  # and ends only once
        scheduler.step_finished(
            a, t, 1, status="success", exit_code=0, signal=None, killed_by=None, duration_s=0
        )
    with pytest.raises(IllegalTransition):
        scheduler.step_started(a, t, 0, "compile")
    steps = scheduler.get_run(view.run_id).jobs[0].attempts[0].steps
    assert [(s.index, s.name, s.status) for s in steps] == [
        (0, "compile", "success"),
        (1, "test", "failed"),
        (2, "upload", "skipped"),
    ]
    assert (steps[0].exit_code, steps[0].duration_s) == (0, 1.25)
    assert (steps[1].signal, steps[1].killed_by) == (9, "timeout")
    assert steps[2].started_at is None


def test_the_reported_image_is_shown_on_the_job(scheduler: Scheduler) -> None:
    view = submit(scheduler, ["only"])
    leased = lease(scheduler)
    scheduler.report_image(leased.attempt_id, leased.lease_token, "debian:12", "sha256:" + "a" * 64)
    job = scheduler.get_run(view.run_id).jobs[0]
    assert (job.image_name, job.image_digest) == ("debian:12", "sha256:" + "a" * 64)


def test_every_recorded_change_is_an_edge_of_its_state_table(
    scheduler: Scheduler, database: Database
) -> None:
    view = submit(scheduler)
    leased = lease(scheduler)
    scheduler.step_started(leased.attempt_id, leased.lease_token, 0, "s")
    scheduler.step_finished(
        leased.attempt_id,
        leased.lease_token,
        0,
        status="success",
        exit_code=0,
        signal=None,
        killed_by=None,
        duration_s=1,
    )
    complete(scheduler, leased)
    complete(scheduler, lease(scheduler), "failed")
    tables = {
        "run": (run_states.TRANSITIONS, run_states.RunState, run_states.RunEvent),
        "job": (job_states.TRANSITIONS, job_states.JobState, job_states.JobEvent),
        "attempt": (attempt_states.TRANSITIONS, attempt_states.AttemptState, attempt_states.AttemptEvent),
        "step": (step_states.TRANSITIONS, step_states.StepState, step_states.StepEvent),
    }
    with database.read_session() as session:
        history = list_events(session, view.run_id)
    changes = [e for e in history if e.from_state is not None]
    assert len(changes) >= 10
    for event in changes:
        transitions, states, events = tables[event.subject]
        key = (states(event.from_state), events(event.event))
        assert transitions[key] == states(event.to_state), event
    assert [e.event for e in history if e.subject == "run"] == ["submitted", "started", "failed"]
