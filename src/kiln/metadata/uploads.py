"""Upload sessions: the control plane's journal of the blob uploads runners do through grants.

A session is ``open`` while its holder (an attempt) uploads; every call of the holder extends its
lease. It ends ``completed`` (the blob is stored: ``outcome`` says whether this upload created it or
found it there) or ``aborted``. A replacement uploader that presents the session's upload id takes
the session over (``held_by`` moves to its attempt) and resumes the multipart upload.

The janitor's side lives here too: which open sessions are abandoned, which upload ids are live,
and which blob digests something still references (entries, source snapshots of unfinished runs,
open and recent sessions). Every function takes the caller's session, like ``entries``.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, exists, or_, select
from sqlalchemy.orm import Session

from kiln.errors import Conflict, NotFound
from kiln.metadata import entries
from kiln.metadata._sql import guarded_update, rowcount
from kiln.metadata.ids import new_id
from kiln.metadata.tables import Attempt, Entry, Job, Run, Tenant, UploadSession

__all__ = [
    "ABORTED",
    "COMPLETED",
    "CREATED",
    "EXISTED",
    "OPEN",
    "AttemptScope",
    "UploadSessionRecord",
    "abandon",
    "attempt_holds",
    "attempt_scope",
    "digest_is_referenced",
    "expired_sessions",
    "find_open_by_upload_id",
    "finish",
    "get",
    "hold",
    "live_upload_ids",
    "open_session",
    "purge_finished",
    "record_existing",
    "referenced_digests",
    "tenant_may_read",
]

OPEN, COMPLETED, ABORTED = "open", "completed", "aborted"
CREATED, EXISTED = "created", "existed"
# Entry states whose blob must stay (entries.referenced_digests uses the same).
_ENTRY_HOLDS_BLOB = (entries.PENDING, entries.UPLOADING, entries.COMMITTED)


@dataclass(frozen=True)
class UploadSessionRecord:
    session_id: str
    tenant_id: int
    digest: str
    size_bytes: int
    upload_id: str | None
    part_size: int | None
    state: str
    outcome: str | None
    lease_expires_at: datetime
    created_by: str
    held_by: str
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class AttemptScope:
    """Whose an attempt is: its run and tenant (what a blob grant is scoped to)."""

    attempt_id: str
    run_id: str
    tenant: str
    tenant_id: int


def _record(row: UploadSession) -> UploadSessionRecord:
    return UploadSessionRecord(
        session_id=row.id,
        tenant_id=row.tenant_id,
        digest=row.digest,
        size_bytes=row.size_bytes,
        upload_id=row.upload_id,
        part_size=row.part_size,
        state=row.state,
        outcome=row.outcome,
        lease_expires_at=row.lease_expires_at,
        created_by=row.created_by,
        held_by=row.held_by,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def attempt_scope(session: Session, attempt_id: str) -> AttemptScope:
    """Return the run and tenant of an attempt; NotFound if there is no such attempt."""
    row = session.execute(
        select(Run.id, Tenant.name, Tenant.id)
        .select_from(Attempt)
        .join(Job, Job.id == Attempt.job_id)
        .join(Run, Run.id == Job.run_id)
        .join(Tenant, Tenant.id == Run.tenant_id)
        .where(Attempt.id == attempt_id)
    ).one_or_none()
    if row is None:
        raise NotFound(f"no attempt {attempt_id}")
    return AttemptScope(attempt_id=attempt_id, run_id=row[0], tenant=row[1], tenant_id=row[2])


def open_session(
    session: Session,
    *,
    tenant_id: int,
    digest: str,
    size_bytes: int,
    upload_id: str | None,
    part_size: int | None,
    attempt_id: str,
    at: datetime,
    lease_expires_at: datetime,
) -> UploadSessionRecord:
    """Record a new ``open`` session held by ``attempt_id``."""
    return _insert(
        session,
        tenant_id=tenant_id,
        digest=digest,
        size_bytes=size_bytes,
        upload_id=upload_id,
        part_size=part_size,
        state=OPEN,
        outcome=None,
        lease_expires_at=lease_expires_at,
        attempt_id=attempt_id,
        at=at,
    )


def record_existing(
    session: Session, *, tenant_id: int, digest: str, size_bytes: int, attempt_id: str, at: datetime
) -> UploadSessionRecord:
    """Record that an upload found its blob already stored (``completed``, outcome ``existed``).

    The row is what keeps the janitor from deleting an old blob in the moment between this answer
    and the caller's commit of a reference to it (see :func:`referenced_digests`).
    """
    return _insert(
        session,
        tenant_id=tenant_id,
        digest=digest,
        size_bytes=size_bytes,
        upload_id=None,
        part_size=None,
        state=COMPLETED,
        outcome=EXISTED,
        lease_expires_at=at,
        attempt_id=attempt_id,
        at=at,
    )


def _insert(session: Session, *, attempt_id: str, at: datetime, **values: Any) -> UploadSessionRecord:
    row = UploadSession(
        id=new_id(at), created_by=attempt_id, held_by=attempt_id, created_at=at, updated_at=at, **values
    )
    session.add(row)
    session.flush()
    session.expunge(row)
    return _record(row)


def get(session: Session, session_id: str) -> UploadSessionRecord:
    """Return the session; NotFound if there is none."""
    row = session.get(UploadSession, session_id)
    if row is None:
        raise NotFound(f"no upload session {session_id}")
    record = _record(row)
    session.expunge(row)
    return record


def find_open_by_upload_id(session: Session, upload_id: str) -> UploadSessionRecord | None:
    """Return the open session of a multipart upload, or None."""
    row = session.scalars(
        select(UploadSession).where(UploadSession.upload_id == upload_id, UploadSession.state == OPEN)
    ).one_or_none()
    if row is None:
        return None
    record = _record(row)
    session.expunge(row)
    return record


def hold(
    session: Session,
    session_id: str,
    *,
    attempt_id: str,
    at: datetime,
    lease_expires_at: datetime,
    take_over: bool = False,
) -> UploadSessionRecord:
    """Extend an open session's lease for its holder (or, with ``take_over``, move it to ``attempt_id``).

    Raises
    ------
    NotFound
        No such session.
    Conflict
        The session is not open, or another attempt holds it (and this is no take-over).
    """
    query = guarded_update(UploadSession).where(UploadSession.id == session_id, UploadSession.state == OPEN)
    if not take_over:
        query = query.where(UploadSession.held_by == attempt_id)
    updated = session.execute(
        query.values(held_by=attempt_id, lease_expires_at=lease_expires_at, updated_at=at)
    )
    record = get(session, session_id)
    if rowcount(updated) != 1:
        if record.state != OPEN:
            raise Conflict(f"upload session {session_id} of {record.digest} is {record.state}")
        raise Conflict(
            f"upload session {session_id} of {record.digest} is held by attempt {record.held_by}, "
            f"not {attempt_id}"
        )
    return record


def finish(
    session: Session, session_id: str, *, state: str, at: datetime, outcome: str | None = None
) -> UploadSessionRecord:
    """End an open session ``completed`` (with ``outcome``) or ``aborted``; repeating it changes nothing.

    Raises
    ------
    Conflict
        The session already ended the other way.
    """
    if state not in (COMPLETED, ABORTED):
        raise ValueError(f"a session finishes completed or aborted, not {state!r}")
    session.execute(
        guarded_update(UploadSession)
        .where(UploadSession.id == session_id, UploadSession.state == OPEN)
        .values(state=state, outcome=outcome, updated_at=at)
    )
    record = get(session, session_id)
    if record.state != state:
        raise Conflict(f"upload session {session_id} of {record.digest} is already {record.state}")
    return record


def expired_sessions(
    session: Session, *, now: datetime, running_state: str, limit: int = 1000
) -> list[UploadSessionRecord]:
    """Open sessions whose lease expired before ``now`` and whose holder is no longer running.

    An attempt that is still running keeps its sessions alive even past their lease: one part of a
    big blob can take longer than the lease, and the attempt's own heartbeat says it is alive.
    """
    holder_running = exists().where(Attempt.id == UploadSession.held_by, Attempt.status == running_state)
    rows = session.scalars(
        select(UploadSession)
        .where(UploadSession.state == OPEN, UploadSession.lease_expires_at < now, ~holder_running)
        .order_by(UploadSession.lease_expires_at)
        .limit(limit)
    ).all()
    records = [_record(row) for row in rows]
    for row in rows:
        session.expunge(row)
    return records


def abandon(session: Session, record: UploadSessionRecord, *, now: datetime, running_state: str) -> bool:
    """Mark an expired open session ``aborted`` if it still is what :func:`expired_sessions` saw.

    Guarded by the same conditions (still open, held by the same attempt, lease still expired,
    holder not running), so a session taken over in the meantime is left alone. Returns whether
    this call aborted it; only then may the caller abort the store's upload.
    """
    holder_running = exists().where(Attempt.id == UploadSession.held_by, Attempt.status == running_state)
    result = session.execute(
        guarded_update(UploadSession)
        .where(
            UploadSession.id == record.session_id,
            UploadSession.state == OPEN,
            UploadSession.held_by == record.held_by,
            UploadSession.lease_expires_at < now,
            ~holder_running,
        )
        .values(state=ABORTED, updated_at=now)
    )
    return rowcount(result) == 1


def live_upload_ids(session: Session) -> set[str]:
    """Upload ids of open sessions: multipart uploads that are nobody's garbage."""
    rows = session.scalars(
        select(UploadSession.upload_id).where(
            UploadSession.state == OPEN, UploadSession.upload_id.is_not(None)
        )
    )
    return {upload_id for upload_id in rows if upload_id is not None}


def referenced_digests(
    session: Session, *, recent_since: datetime, unfinished_run_states: Sequence[str]
) -> set[str]:
    """Every blob digest something still needs.

    * entries that hold a blob (pending, uploading, committed);
    * source snapshots of runs that are not finished;
    * open sessions, and sessions that ended after ``recent_since`` (an upload that completed or
      found its blob stored, whose caller has not committed its entry yet).
    """
    found = entries.referenced_digests(session)
    found.update(
        session.scalars(
            select(Run.source_digest).where(Run.status.in_(list(unfinished_run_states))).distinct()
        )
    )
    found.update(
        session.scalars(
            select(UploadSession.digest)
            .where(or_(UploadSession.state == OPEN, UploadSession.updated_at >= recent_since))
            .distinct()
        )
    )
    return found


def digest_is_referenced(
    session: Session, digest: str, *, recent_since: datetime, unfinished_run_states: Sequence[str]
) -> bool:
    """Whether :func:`referenced_digests` includes ``digest``: the janitor's last check before a delete."""
    in_entries = select(Entry.id).where(Entry.digest == digest, Entry.status.in_(_ENTRY_HOLDS_BLOB)).limit(1)
    in_runs = (
        select(Run.id)
        .where(Run.source_digest == digest, Run.status.in_(list(unfinished_run_states)))
        .limit(1)
    )
    in_sessions = (
        select(UploadSession.id)
        .where(
            UploadSession.digest == digest,
            or_(UploadSession.state == OPEN, UploadSession.updated_at >= recent_since),
        )
        .limit(1)
    )
    return any(session.scalar(query) is not None for query in (in_entries, in_runs, in_sessions))


def attempt_holds(session: Session, attempt_id: str, digest: str) -> bool:
    """Whether the tenant of an attempt holds the blob (:func:`tenant_may_read`).

    Every commit of an entry (cache, artifact, layer) asks this first: an entry that names a blob
    its tenant never uploaded nor proved would open that blob, which may be another tenant's, to
    whoever merely learned its digest.
    """
    scope = attempt_scope(session, attempt_id)
    return tenant_may_read(session, tenant_id=scope.tenant_id, digest=digest)


def tenant_may_read(session: Session, *, tenant_id: int, digest: str) -> bool:
    """Whether the tenant holds the blob: a committed entry, a completed upload or a run source of its own.

    Blobs are shared by content across tenants; this keeps a download grant from opening a blob
    of another tenant to someone who merely learned its digest, and it is what lets an upload of a
    stored blob skip sending it without a proof of possession (``kiln.storage.possession``). An
    upload session completes only when its bytes were sent, or proven, or the tenant held the blob
    already. A pending or uploading entry does not count: it names a digest, it proves nothing.
    """
    own_entry = (
        select(Entry.id)
        .where(Entry.tenant_id == tenant_id, Entry.digest == digest, Entry.status == entries.COMMITTED)
        .limit(1)
    )
    own_upload = (
        select(UploadSession.id)
        .where(
            UploadSession.tenant_id == tenant_id,
            UploadSession.digest == digest,
            UploadSession.state == COMPLETED,
        )
        .limit(1)
    )
    own_source = select(Run.id).where(Run.tenant_id == tenant_id, Run.source_digest == digest).limit(1)
    return any(session.scalar(query) is not None for query in (own_entry, own_upload, own_source))


def purge_finished(
    session: Session, *, before: datetime, states: Collection[str] = (COMPLETED, ABORTED)
) -> int:
    """Delete ended sessions last updated before ``before``; return how many."""
    result = session.execute(
        delete(UploadSession)
        .where(UploadSession.state.in_(list(states)), UploadSession.updated_at < before)
        .execution_options(synchronize_session=False)
    )
    return rowcount(result)
