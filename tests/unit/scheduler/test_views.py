from __future__ import annotations

from datetime import UTC, datetime, timedelta

from kiln.metadata.records import AttemptRecord, JobRecord, RunRecord, StepRecord
from kiln.scheduler.views import build_run_view, run_context_of

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def _run() -> RunRecord:
    return RunRecord(
        run_id="R",
        tenant="t",
        repo="r",
        workflow_name="ci",
        workflow_json={},
        source_digest="sha256:0",
        ref="main",
        default_branch="main",
        event="push",
        base_ref=None,
        is_fork=False,
        pull_request=None,
        protected_refs=("release",),
        trust_tier="protected",
        status="running",
        submitted_by=None,
        created_at=T0,
        started_at=T0,
        finished_at=None,
        cancel_requested=False,
    )


def _job(job_id: str, position: int, *, finished: bool) -> JobRecord:
    return JobRecord(
        job_id=job_id,
        run_id="R",
        position=position,
        name=f"job{position}",
        spec={},
        status="success" if finished else "pending",
        attempts_count=2 if finished else 0,
        max_attempts=3,
        created_at=T0,
        started_at=T0 if finished else None,
        finished_at=T0 + timedelta(seconds=90) if finished else None,
        error_message=None,
    )


def _attempt(attempt_id: str, number: int, digest: str | None) -> AttemptRecord:
    return AttemptRecord(
        attempt_id=attempt_id,
        job_id="J0",
        run_id="R",
        number=number,
        runner_id="r1",
        lease_token="secret-token",
        lease_expires_at=T0,
        status="success",
        started_at=T0,
        finished_at=T0,
        error_message=None,
        image_name="busybox" if digest else None,
        image_digest=digest,
    )


def test_a_view_orders_everything_and_keeps_tokens_out() -> None:
    steps = [
        StepRecord("A2", 1, "test", "success", 0, None, None, T0, T0, 2.0),
        StepRecord("A2", 0, "build", "success", 0, None, None, T0, T0, 1.0),
    ]
    view = build_run_view(
        _run(),
        [_job("J0", 0, finished=True), _job("J1", 1, finished=False)],
        [_attempt("A2", 2, None), _attempt("A1", 1, "sha256:1")],
        steps,
    )
    first, second = view.jobs
    assert [a.number for a in first.attempts] == [1, 2]
    assert [s.index for s in first.attempts[1].steps] == [0, 1]
    assert first.duration_s == 90.0
    assert (first.image_name, first.image_digest) == ("busybox", "sha256:1")  # the latest that reported
    assert second.duration_s is None and second.attempts == ()
    assert "secret-token" not in repr(view)


def test_the_context_round_trips() -> None:
    context = run_context_of(_run())
    assert context.protected_refs == ("release",)
    assert context.trust_tier.value == "protected"
