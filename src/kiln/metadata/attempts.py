"""Attempts (one lease of a job by a runner) and the steps each attempt reports.

Writes a runner makes are fenced by its ``lease_token``: the guard is part of the ``UPDATE``, so a
runner whose lease was reclaimed changes nothing and gets :class:`~kiln.errors.LeaseLost`. The
lease itself (creating it, holding it, extending it, finding expired ones) is in ``leases.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from kiln.errors import IllegalTransition, LeaseLost
from kiln.metadata._sql import guarded_update, rowcount
from kiln.metadata.auth import secret_digest
from kiln.metadata.events import record_event
from kiln.metadata.records import AttemptRecord, StepRecord
from kiln.metadata.tables import Attempt, Job, Step

__all__ = [
    "ATTEMPT_COLUMNS",
    "attempt_record",
    "get_attempt",
    "get_step",
    "insert_step",
    "list_attempts",
    "list_steps",
    "record_image",
    "record_report",
    "transition_attempt",
    "transition_step",
]

ATTEMPT_COLUMNS = (
    Attempt.id,
    Attempt.job_id,
    Job.run_id,
    Attempt.number,
    Attempt.runner_id,
    Attempt.lease_token,
    Attempt.lease_expires_at,
    Attempt.status,
    Attempt.started_at,
    Attempt.finished_at,
    Attempt.error_message,
    Attempt.image_name,
    Attempt.image_digest,
    Attempt.report,
)


def attempt_record(row: Sequence[Any]) -> AttemptRecord:
    """Build a record from a row selected as :data:`ATTEMPT_COLUMNS` (attempts joined to jobs)."""
    return AttemptRecord(
        attempt_id=row[0],
        job_id=row[1],
        run_id=row[2],
        number=row[3],
        runner_id=row[4],
        lease_token=row[5],
        lease_expires_at=row[6],
        status=row[7],
        started_at=row[8],
        finished_at=row[9],
        error_message=row[10],
        image_name=row[11],
        image_digest=row[12],
        report=row[13],
    )


def get_attempt(session: Session, attempt_id: str, *, for_update: bool = False) -> AttemptRecord | None:
    """Return the attempt, or ``None``.

    Parameters
    ----------
    for_update
        Lock the attempt row (PostgreSQL ``FOR NO KEY UPDATE``); take the run's lock first.
    """
    query = select(*ATTEMPT_COLUMNS).join(Job, Job.id == Attempt.job_id).where(Attempt.id == attempt_id)
    if for_update:
        query = query.with_for_update(of=Attempt, key_share=True)
    row = session.execute(query).one_or_none()
    return None if row is None else attempt_record(row)


def list_attempts(session: Session, job_ids: Sequence[str]) -> list[AttemptRecord]:
    """Return the attempts of these jobs, by job and then number."""
    if not job_ids:
        return []
    query = (
        select(*ATTEMPT_COLUMNS)
        .join(Job, Job.id == Attempt.job_id)
        .where(Attempt.job_id.in_(job_ids))
        .order_by(Job.position, Attempt.number)
    )
    return [attempt_record(row) for row in session.execute(query)]


def transition_attempt(
    session: Session,
    attempt: AttemptRecord,
    *,
    from_state: str,
    to_state: str,
    event: str,
    at: datetime,
    lease_token: str | None = None,
    expired_before: datetime | None = None,
    error_message: str | None = None,
) -> None:
    """Move an attempt from ``from_state`` to ``to_state`` with a guarded ``UPDATE``, and record it.

    The attempt's lease ends with it: ``finished_at`` is stamped.

    Parameters
    ----------
    attempt
        The attempt (its id, job and run are used).
    from_state, to_state, event
        As chosen by ``kiln.scheduler.attempt_states.next_state``.
    lease_token
        When the runner asks: the token it holds. Part of the guard.
    expired_before
        When the janitor asks: the lease must have expired before this time. Part of the guard, so a
        heartbeat that extended the lease in the meantime wins the race.
    error_message
        Stored when given.

    Raises
    ------
    LeaseLost
        ``lease_token`` was given and the attempt is not in ``from_state`` under that token.
    IllegalTransition
        No ``lease_token`` was given and the guard did not match.
    """
    guard = [Attempt.id == attempt.attempt_id, Attempt.status == from_state]
    if lease_token is not None:
        guard.append(Attempt.lease_token == secret_digest(lease_token))
    if expired_before is not None:
        guard.append(Attempt.lease_expires_at < expired_before)
    values: dict[str, Any] = {"status": to_state, "finished_at": at}
    if error_message is not None:
        values["error_message"] = error_message
    updated = session.execute(guarded_update(Attempt).where(*guard).values(**values))
    if rowcount(updated) != 1:
        where = f"attempt {attempt.number} of job {attempt.job_id}"
        if lease_token is not None:
            raise LeaseLost(f"{where}: the lease is no longer held with this token ({event} refused)")
        raise IllegalTransition(f"{where}: {event} needs state {from_state} (and an expired lease)")
    record_event(
        session,
        run_id=attempt.run_id,
        job_id=attempt.job_id,
        attempt_id=attempt.attempt_id,
        subject="attempt",
        from_state=from_state,
        to_state=to_state,
        event=event,
        at=at,
        detail=error_message,
    )


def record_image(session: Session, attempt: AttemptRecord, *, name: str, digest: str) -> None:
    """Store the image (name and resolved digest) the attempt's runner reports it runs in.

    The caller holds the lease (``leases.hold_lease``).
    """
    session.execute(
        guarded_update(Attempt)
        .where(Attempt.id == attempt.attempt_id)
        .values(image_name=name, image_digest=digest)
    )


def record_report(session: Session, attempt: AttemptRecord, *, section: str, value: Any) -> None:
    """Set one section of the attempt's report (``caches``, ``artifacts``, ``image``), replacing it.

    The caller holds the lease. Sections are replaced whole, so a retried request changes nothing.
    """
    report = dict(attempt.report or {})
    report[section] = value
    session.execute(guarded_update(Attempt).where(Attempt.id == attempt.attempt_id).values(report=report))


_STEP_COLUMNS = (
    Step.attempt_id,
    Step.step_index,
    Step.name,
    Step.status,
    Step.exit_code,
    Step.signal,
    Step.killed_by,
    Step.started_at,
    Step.finished_at,
    Step.duration_s,
)


def _step_record(row: Sequence[Any]) -> StepRecord:
    return StepRecord(
        attempt_id=row[0],
        index=row[1],
        name=row[2],
        status=row[3],
        exit_code=row[4],
        signal=row[5],
        killed_by=row[6],
        started_at=row[7],
        finished_at=row[8],
        duration_s=row[9],
    )


def get_step(session: Session, attempt_id: str, index: int) -> StepRecord | None:
    """Return the step, or ``None`` if the runner has not reported it."""
    query = select(*_STEP_COLUMNS).where(Step.attempt_id == attempt_id, Step.step_index == index)
    row = session.execute(query).one_or_none()
    return None if row is None else _step_record(row)


def list_steps(session: Session, attempt_ids: Sequence[str]) -> list[StepRecord]:
    """Return the steps of these attempts, by attempt and index."""
    if not attempt_ids:
        return []
    query = (
        select(*_STEP_COLUMNS)
        .where(Step.attempt_id.in_(attempt_ids))
        .order_by(Step.attempt_id, Step.step_index)
    )
    return [_step_record(row) for row in session.execute(query)]


def insert_step(
    session: Session,
    attempt: AttemptRecord,
    *,
    index: int,
    name: str,
    status: str,
    event: str,
    at: datetime,
    started_at: datetime | None,
    finished_at: datetime | None = None,
    exit_code: int | None = None,
    signal: int | None = None,
    killed_by: str | None = None,
    duration_s: float | None = None,
) -> None:
    """Insert a step the first time the runner reports it, with its event.

    The caller holds the lease (``leases.hold_lease``), so no other transaction inserts the same
    step meanwhile; the primary key (attempt, index) would refuse it anyway.
    """
    session.execute(
        insert(Step).values(
            attempt_id=attempt.attempt_id,
            step_index=index,
            name=name,
            status=status,
            exit_code=exit_code,
            signal=signal,
            killed_by=killed_by,
            started_at=started_at,
            finished_at=finished_at,
            duration_s=duration_s,
        )
    )
    record_event(
        session,
        run_id=attempt.run_id,
        job_id=attempt.job_id,
        attempt_id=attempt.attempt_id,
        subject="step",
        from_state=None,
        to_state=status,
        event=event,
        at=at,
        detail=f"step {index} {name!r}",
    )


def transition_step(
    session: Session,
    attempt: AttemptRecord,
    *,
    index: int,
    from_state: str,
    to_state: str,
    event: str,
    at: datetime,
    exit_code: int | None,
    signal: int | None,
    killed_by: str | None,
    duration_s: float | None,
) -> None:
    """Move a reported step from ``from_state`` to ``to_state`` (guarded), and record it.

    Raises
    ------
    IllegalTransition
        The step is not in ``from_state``.
    """
    updated = session.execute(
        guarded_update(Step)
        .where(Step.attempt_id == attempt.attempt_id, Step.step_index == index, Step.status == from_state)
        .values(
            status=to_state,
            finished_at=at,
            exit_code=exit_code,
            signal=signal,
            killed_by=killed_by,
            duration_s=duration_s,
        )
    )
    if rowcount(updated) != 1:
        raise IllegalTransition(
            f"step {index} of attempt {attempt.attempt_id}: {event} needs state {from_state}"
        )
    record_event(
        session,
        run_id=attempt.run_id,
        job_id=attempt.job_id,
        attempt_id=attempt.attempt_id,
        subject="step",
        from_state=from_state,
        to_state=to_state,
        event=event,
        at=at,
        detail=f"step {index}",
    )
