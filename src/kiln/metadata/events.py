"""The ``job_events`` history: one row per state change, written by the transaction that makes it.

Callers never write history by hand: ``runs.transition_run``, ``jobs.transition_job``,
``attempts.transition_attempt`` and the step and lease functions call :func:`record_event` right
after their guarded ``UPDATE`` (or ``INSERT``) succeeded.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from kiln.metadata.records import EventRecord
from kiln.metadata.tables import JobEvent

__all__ = ["list_events", "record_event"]


def record_event(
    session: Session,
    *,
    run_id: str,
    subject: str,
    from_state: str | None,
    to_state: str,
    event: str,
    at: datetime,
    job_id: str | None = None,
    attempt_id: str | None = None,
    detail: str | None = None,
) -> None:
    """Append one history row.

    Parameters
    ----------
    subject
        ``"run"``, ``"job"``, ``"attempt"`` or ``"step"``.
    from_state
        The state before, or ``None`` when the subject was just created.
    """
    session.execute(
        insert(JobEvent).values(
            run_id=run_id,
            job_id=job_id,
            attempt_id=attempt_id,
            subject=subject,
            from_state=from_state,
            to_state=to_state,
            event=event,
            at=at,
            detail=detail,
        )
    )


def list_events(session: Session, run_id: str) -> list[EventRecord]:
    """Return the history of a run, oldest first.

    Parameters
    ----------
    run_id
        The run; its jobs', attempts' and steps' events are included.

    Returns
    -------
    list[EventRecord]
        Empty for an unknown run.
    """
    rows = session.execute(select(JobEvent).where(JobEvent.run_id == run_id).order_by(JobEvent.id)).scalars()
    return [
        EventRecord(
            event_id=row.id,
            run_id=row.run_id,
            job_id=row.job_id,
            attempt_id=row.attempt_id,
            subject=row.subject,
            from_state=row.from_state,
            to_state=row.to_state,
            event=row.event,
            at=row.at,
            detail=row.detail,
        )
        for row in rows
    ]
