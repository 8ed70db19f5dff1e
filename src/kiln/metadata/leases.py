"""Leases: a runner's claim on a job, fenced by a token that is new on every claim.

An attempt row *is* the lease: ``runner_id`` (who), ``lease_token`` (which incarnation of the
claim) and ``lease_expires_at`` (until when, unless extended). Every later write by the runner
presents the token; a write with a stale token changes nothing and raises
:class:`~kiln.errors.LeaseLost`. The token is the job's credential (the API's job token), so the
column holds only its sha256 (:func:`kiln.metadata.auth.secret_digest`); functions here take the
token itself and hash it. An expired lease stays the runner's until the janitor reclaims it
(``attempts.transition_attempt`` with ``expired_before``), never as a side effect of leasing.

Lock order on PostgreSQL: run, then attempt, then jobs (see ``runs.py``). :func:`lease_next_job`
takes its job and run rows with ``SKIP LOCKED``, so it never waits and cannot close a cycle;
:func:`hold_lease` and :func:`extend_lease` lock only the attempt row.
"""

from __future__ import annotations

import hmac
from datetime import datetime

from sqlalchemy import ColumnElement, func, insert, literal, select
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session, aliased

from kiln.errors import LeaseLost
from kiln.metadata._sql import dialect_of, guarded_update, rowcount
from kiln.metadata.attempts import ATTEMPT_COLUMNS, attempt_record
from kiln.metadata.auth import secret_digest
from kiln.metadata.events import record_event
from kiln.metadata.jobs import JOB_COLUMNS, job_record
from kiln.metadata.records import AttemptRecord, LeaseRecord
from kiln.metadata.tables import Attempt, Job, Run, Runner, Tenant, UTCDateTime

__all__ = [
    "extend_lease",
    "find_expired_leases",
    "hold_lease",
    "holds",
    "lease_next_job",
    "touch_runner",
    "why_lost",
]


def lease_next_job(
    session: Session,
    *,
    runner_id: str,
    attempt_id: str,
    lease_token: str,
    at: datetime,
    expires_at: datetime,
    queued: str,
    running: str,
    attempt_running: str,
    run_id: str | None = None,
    tenant: str | None = None,
) -> LeaseRecord | None:
    """Lease the oldest queued job (of runs not being cancelled) and create its attempt.

    The job is picked and moved from ``queued`` to ``running`` by one guarded statement,
    ``UPDATE jobs … WHERE id = (SELECT … LIMIT 1) AND status = :queued RETURNING …``:

    * PostgreSQL: the subquery locks the job and its run ``FOR NO KEY UPDATE SKIP LOCKED``.
      Concurrent leasers each skip what another holds, so no job is leased twice and nobody waits.
    * SQLite: one writer at a time. ``Database.session()`` began this transaction with
      ``BEGIN IMMEDIATE``, so nothing can change between the pick and the update.

    Parameters
    ----------
    runner_id, attempt_id, lease_token
        The new attempt's owner, id and fencing token.
    at, expires_at
        Now, and when the lease ends unless a heartbeat extends it.
    queued, running, attempt_running
        The job states before and after, and the new attempt's state (from the scheduler's tables).
    run_id
        Only jobs of this run, when given.
    tenant
        Only jobs of this tenant's runs, when given (a runner registered for one tenant).

    Returns
    -------
    LeaseRecord | None
        The job as leased and its attempt, or ``None`` when nothing is runnable.
    """
    candidate = aliased(Job, name="candidate")
    pick = (
        select(candidate.id)
        .join(Run, Run.id == candidate.run_id)
        .where(candidate.status == queued, Run.cancel_requested.is_(False))
        .order_by(Run.created_at, Run.id, candidate.position)
        .limit(1)
    )
    if run_id is not None:
        pick = pick.where(candidate.run_id == run_id)
    if tenant is not None:
        pick = pick.where(Run.tenant_id == select(Tenant.id).where(Tenant.name == tenant).scalar_subquery())
    if dialect_of(session) == "postgresql":
        pick = pick.with_for_update(of=(candidate, Run), skip_locked=True, key_share=True)
    elif session.connection().get_execution_options().get("kiln_read_only"):
        # SQLite: the pick-then-update is only atomic under the write lock BEGIN IMMEDIATE took.
        raise RuntimeError("lease_next_job needs a read-write session (BEGIN IMMEDIATE on SQLite)")

    leased = session.execute(
        guarded_update(Job)
        .where(Job.id == pick.scalar_subquery(), Job.status == queued)
        .values(
            status=running,
            attempts_count=Job.attempts_count + 1,
            started_at=_coalesce_started(at),
        )
        .returning(*JOB_COLUMNS)
    ).one_or_none()
    if leased is None:
        return None
    job = job_record(leased)

    number = job.attempts_count
    session.execute(
        insert(Attempt).values(
            id=attempt_id,
            job_id=job.job_id,
            number=number,
            runner_id=runner_id,
            lease_token=secret_digest(lease_token),
            lease_expires_at=expires_at,
            status=attempt_running,
            started_at=at,
        )
    )
    detail = f"attempt {number} leased by runner {runner_id}"
    record_event(
        session,
        run_id=job.run_id,
        job_id=job.job_id,
        attempt_id=attempt_id,
        subject="job",
        from_state=queued,
        to_state=running,
        event="leased",
        at=at,
        detail=detail,
    )
    record_event(
        session,
        run_id=job.run_id,
        job_id=job.job_id,
        attempt_id=attempt_id,
        subject="attempt",
        from_state=None,
        to_state=attempt_running,
        event="leased",
        at=at,
        detail=detail,
    )
    attempt = AttemptRecord(
        attempt_id=attempt_id,
        job_id=job.job_id,
        run_id=job.run_id,
        number=number,
        runner_id=runner_id,
        lease_token=lease_token,
        lease_expires_at=expires_at,
        status=attempt_running,
        started_at=at,
        finished_at=None,
        error_message=None,
        image_name=None,
        image_digest=None,
    )
    return LeaseRecord(job=job, attempt=attempt)


def _coalesce_started(at: datetime) -> ColumnElement[datetime]:
    # Keep the first lease's time across retries: a job's duration includes its lost attempts.
    return func.coalesce(Job.started_at, literal(at, UTCDateTime()))


def hold_lease(session: Session, attempt_id: str, lease_token: str, *, running: str) -> AttemptRecord:
    """Check that ``lease_token`` holds the attempt's lease, and lock the attempt until commit.

    Holding the row lock serialises the runner's writes for one attempt (logs, steps) with each
    other and with the janitor: a reclaim cannot slip in between this check and the caller's
    writes, and log ids are allocated in commit order (see ``logs.append_log_chunks``).

    Parameters
    ----------
    running
        The attempt state that holds a lease.

    Returns
    -------
    AttemptRecord
        The attempt.

    Raises
    ------
    LeaseLost
        No such attempt, another token, or the attempt has ended (completed, reclaimed).
    """
    query = (
        select(*ATTEMPT_COLUMNS)
        .join(Job, Job.id == Attempt.job_id)
        .where(Attempt.id == attempt_id)
        .with_for_update(of=Attempt, key_share=True)
    )
    row = session.execute(query).one_or_none()
    attempt = None if row is None else attempt_record(row)
    if attempt is None or not holds(attempt, lease_token) or attempt.status != running:
        raise LeaseLost(why_lost(attempt_id, attempt, lease_token))
    return attempt


def extend_lease(
    session: Session, attempt_id: str, lease_token: str, *, running: str, expires_at: datetime
) -> AttemptRecord:
    """Extend a held lease to ``expires_at`` (a heartbeat): one guarded ``UPDATE``.

    Returns
    -------
    AttemptRecord
        The attempt, with its new expiry.

    Raises
    ------
    LeaseLost
        As :func:`hold_lease`.
    """
    updated = session.execute(
        guarded_update(Attempt)
        .where(
            Attempt.id == attempt_id,
            Attempt.lease_token == secret_digest(lease_token),
            Attempt.status == running,
        )
        .values(lease_expires_at=expires_at)
    )
    row = session.execute(
        select(*ATTEMPT_COLUMNS).join(Job, Job.id == Attempt.job_id).where(Attempt.id == attempt_id)
    ).one_or_none()
    attempt = None if row is None else attempt_record(row)
    if rowcount(updated) != 1 or attempt is None:
        raise LeaseLost(why_lost(attempt_id, attempt, lease_token))
    return attempt


def holds(attempt: AttemptRecord, lease_token: str) -> bool:
    """Whether ``lease_token`` is the token the attempt was leased with (whatever its state now)."""
    return hmac.compare_digest(attempt.lease_token, secret_digest(lease_token))


def why_lost(attempt_id: str, attempt: AttemptRecord | None, lease_token: str) -> str:
    """Explain why ``lease_token`` does not hold the attempt's lease (never echoing the right one)."""
    if attempt is None:
        return f"attempt {attempt_id} does not exist"
    where = f"attempt {attempt.number} ({attempt_id}) of job {attempt.job_id}"
    if not holds(attempt, lease_token):
        return f"{where}: the lease token does not match (another claim holds it)"
    return f"{where} is {attempt.status}: its lease has ended"


def find_expired_leases(
    session: Session, *, now: datetime, running: str, limit: int = 100
) -> list[AttemptRecord]:
    """Return running attempts whose lease expired before ``now``, longest expired first.

    Only a candidate list: the janitor reclaims each with a guarded ``UPDATE`` that repeats the
    expiry check, because a heartbeat may extend the lease in between.
    """
    query = (
        select(*ATTEMPT_COLUMNS)
        .join(Job, Job.id == Attempt.job_id)
        .where(Attempt.status == running, Attempt.lease_expires_at < now)
        .order_by(Attempt.lease_expires_at)
        .limit(limit)
    )
    return [attempt_record(row) for row in session.execute(query)]


def touch_runner(session: Session, runner_id: str, *, at: datetime) -> None:
    """Record that the runner was seen at ``at``, registering it on first sight (race-safe).

    Call it last in a transaction: the runner row is the last lock taken.
    """
    updated = session.execute(guarded_update(Runner).where(Runner.id == runner_id).values(last_seen=at))
    if rowcount(updated) == 1:
        return
    try:
        with session.begin_nested():
            session.execute(insert(Runner).values(id=runner_id, name=runner_id, labels=[], last_seen=at))
    except sa_exc.IntegrityError:
        # Registered concurrently by another request of the same runner.
        session.execute(guarded_update(Runner).where(Runner.id == runner_id).values(last_seen=at))
