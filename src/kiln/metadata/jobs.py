"""Jobs: one row per job of a run, in file order (``position``).

Every status change is :func:`transition_job`: a guarded ``UPDATE … WHERE id=:id AND
status=:from``, a rowcount check, and a ``job_events`` row. Queued → running happens in the lease
query instead (``leases.lease_next_job``), which is the same guard inside one statement.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from kiln.errors import IllegalTransition
from kiln.metadata._sql import guarded_update, rowcount
from kiln.metadata.events import record_event
from kiln.metadata.records import JobRecord, NewJob
from kiln.metadata.tables import Job

__all__ = ["JOB_COLUMNS", "get_job", "insert_jobs", "job_record", "list_jobs", "transition_job"]

JOB_COLUMNS = (
    Job.id,
    Job.run_id,
    Job.position,
    Job.name,
    Job.spec_json,
    Job.status,
    Job.attempts_count,
    Job.max_attempts,
    Job.created_at,
    Job.started_at,
    Job.finished_at,
    Job.error_message,
)


def job_record(row: Sequence[Any]) -> JobRecord:
    """Build a record from a row selected (or returned) as :data:`JOB_COLUMNS`."""
    return JobRecord(
        job_id=row[0],
        run_id=row[1],
        position=row[2],
        name=row[3],
        spec=row[4],
        status=row[5],
        attempts_count=row[6],
        max_attempts=row[7],
        created_at=row[8],
        started_at=row[9],
        finished_at=row[10],
        error_message=row[11],
    )


def insert_jobs(session: Session, run_id: str, jobs: Sequence[NewJob], *, at: datetime) -> None:
    """Insert the jobs of a new run, each with its creation event.

    Parameters
    ----------
    run_id
        The run, inserted in the same transaction.
    jobs
        In file order; ``position`` is unique within the run, and so is ``name``.
    at
        Creation time.
    """
    session.execute(
        insert(Job),
        [
            {
                "id": job.job_id,
                "run_id": run_id,
                "position": job.position,
                "name": job.name,
                "spec_json": job.spec,
                "status": job.status,
                "attempts_count": 0,
                "max_attempts": job.max_attempts,
                "created_at": at,
            }
            for job in jobs
        ],
    )
    for job in jobs:
        record_event(
            session,
            run_id=run_id,
            job_id=job.job_id,
            subject="job",
            from_state=None,
            to_state=job.status,
            event="created",
            at=at,
        )


def list_jobs(session: Session, run_id: str) -> list[JobRecord]:
    """Return the run's jobs in file order (empty for an unknown run)."""
    query = select(*JOB_COLUMNS).where(Job.run_id == run_id).order_by(Job.position)
    return [job_record(row) for row in session.execute(query)]


def get_job(session: Session, job_id: str) -> JobRecord | None:
    """Return the job, or ``None``."""
    row = session.execute(select(*JOB_COLUMNS).where(Job.id == job_id)).one_or_none()
    return None if row is None else job_record(row)


def transition_job(
    session: Session,
    job: JobRecord,
    *,
    from_state: str,
    to_state: str,
    event: str,
    at: datetime,
    attempt_id: str | None = None,
    started_at: datetime | None = None,
    finished_at: datetime | None = None,
    error_message: str | None = None,
    detail: str | None = None,
) -> None:
    """Move a job from ``from_state`` to ``to_state`` with a guarded ``UPDATE``, and record it.

    Parameters
    ----------
    job
        The job (its id and run id are used).
    from_state, to_state, event
        As chosen by ``kiln.scheduler.job_states.next_state``.
    attempt_id
        The attempt that caused the change, for the history.
    started_at, finished_at, error_message
        Stored when given.

    Raises
    ------
    IllegalTransition
        The job is not in ``from_state`` (any more).
    """
    values: dict[str, Any] = {"status": to_state}
    if started_at is not None:
        values["started_at"] = started_at
    if finished_at is not None:
        values["finished_at"] = finished_at
    if error_message is not None:
        values["error_message"] = error_message
    updated = session.execute(
        guarded_update(Job).where(Job.id == job.job_id, Job.status == from_state).values(**values)
    )
    if rowcount(updated) != 1:
        raise IllegalTransition(
            f"job {job.name!r} of run {job.run_id}: {event} needs state {from_state}, "
            "which it is no longer in"
        )
    record_event(
        session,
        run_id=job.run_id,
        job_id=job.job_id,
        attempt_id=attempt_id,
        subject="job",
        from_state=from_state,
        to_state=to_state,
        event=event,
        at=at,
        detail=detail or error_message,
    )
