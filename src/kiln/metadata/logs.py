"""Log chunks: the masked output of attempts, appended idempotently, read as a tail.

A chunk's ``id`` is the cursor of a tail. That is only safe if, within one run, ids become visible
in the order they were allocated; otherwise a reader that has seen id 105 could later miss an id
104 committed after it. Two things guarantee the order:

* appends hold the attempt's row lock (``leases.hold_lease``) until they commit, so two appends
  of one attempt allocate and commit one after the other (SQLite has one writer anyway);
* a run has at most one running attempt at a time (jobs run one after another, the partial unique
  index allows one running attempt per job, and a reclaimed attempt's runner is fenced).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from kiln.metadata.records import AttemptRecord, LogChunk, LogRecord
from kiln.metadata.tables import Attempt, Job
from kiln.metadata.tables import LogChunk as LogChunkRow

__all__ = ["append_log_chunks", "read_logs"]


def append_log_chunks(
    session: Session, attempt: AttemptRecord, chunks: Sequence[LogChunk], *, at: datetime
) -> int:
    """Store the chunks the attempt has not stored yet; a repeated ``seq`` is ignored.

    The caller holds the attempt's lease row lock (``leases.hold_lease``): that makes the
    check-then-insert below race-free and keeps ids in commit order.

    Parameters
    ----------
    attempt
        The attempt the chunks belong to.
    chunks
        In any order; for a ``seq`` given twice the first wins.
    at
        Arrival time.

    Returns
    -------
    int
        How many chunks were new.
    """
    wanted = {}
    for chunk in chunks:
        wanted.setdefault(chunk.seq, chunk)
    if not wanted:
        return 0
    stored = set(
        session.execute(
            select(LogChunkRow.seq).where(
                LogChunkRow.attempt_id == attempt.attempt_id, LogChunkRow.seq.in_(wanted)
            )
        ).scalars()
    )
    new = [wanted[seq] for seq in sorted(wanted) if seq not in stored]
    if new:
        session.execute(
            insert(LogChunkRow),
            [
                {
                    "run_id": attempt.run_id,
                    "attempt_id": attempt.attempt_id,
                    "seq": chunk.seq,
                    "step_index": chunk.step_index,
                    "data": chunk.data,
                    "created_at": at,
                }
                for chunk in new
            ],
        )
    return len(new)


def read_logs(
    session: Session, run_id: str, *, after_id: int = 0, job_name: str | None = None, limit: int = 1000
) -> list[LogRecord]:
    """Return the run's chunks with an id above ``after_id``, in id order.

    Parameters
    ----------
    after_id
        The cursor: the id of the last chunk already seen, 0 for the start.
    job_name
        Only this job's chunks, when given.
    limit
        At most this many.

    Returns
    -------
    list[LogRecord]
        In the order they were written.
    """
    query = (
        select(
            LogChunkRow.id,
            Job.name,
            Attempt.number,
            LogChunkRow.step_index,
            LogChunkRow.seq,
            LogChunkRow.data,
            LogChunkRow.created_at,
        )
        .join(Attempt, Attempt.id == LogChunkRow.attempt_id)
        .join(Job, Job.id == Attempt.job_id)
        .where(LogChunkRow.run_id == run_id, LogChunkRow.id > after_id)
        .order_by(LogChunkRow.id)
        .limit(limit)
    )
    if job_name is not None:
        query = query.where(Job.name == job_name)
    return [
        LogRecord(
            log_id=r[0],
            job_name=r[1],
            attempt_number=r[2],
            step_index=r[3],
            seq=r[4],
            data=r[5],
            created_at=r[6],
        )
        for r in session.execute(query)
    ]
