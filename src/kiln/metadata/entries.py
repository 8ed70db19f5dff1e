"""Entry records: cache entries, artifacts and image layers under one commit protocol.

ARCHITECTURE.md §4, as SQL. A writer *reserves* a ``pending`` entry, says which blob it is
uploading (``uploading``), and *commits* it. The commit is create-only: a partial unique index on
``(tenant_id, kind, identity)`` among committed rows lets exactly one entry of an identity be
committed, so when two writers race the database picks the winner and the loser's entry ends
``failed`` (``failure = "lost-race"``), its blob left unreferenced for the janitor.

Only ``committed`` entries are visible to readers; a committed entry never changes its blob. It
later becomes ``expired`` (retention) or ``deleted`` (a user or the janitor), never visible again.

The domain modules (caches, artifacts, images) decide what ``identity``, ``scope`` and ``key``
mean; this module only keeps the protocol. Every function takes the caller's session, so a
domain operation and its entry change commit in one transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, or_, select, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session

from kiln.errors import Conflict, NotFound
from kiln.metadata.ids import new_id
from kiln.metadata.tables import Entry, Tenant

__all__ = [
    "CommitResult",
    "EntryRecord",
    "commit",
    "evict_over_quota",
    "expire_due",
    "fail",
    "find_committed",
    "get",
    "mark_uploading",
    "referenced_digests",
    "reserve",
    "search",
    "set_status",
    "touch",
]

PENDING, UPLOADING, COMMITTED, FAILED, EXPIRED, DELETED = (
    "pending",
    "uploading",
    "committed",
    "failed",
    "expired",
    "deleted",
)
STATUSES = (PENDING, UPLOADING, COMMITTED, FAILED, EXPIRED, DELETED)
_OPEN = (PENDING, UPLOADING)
# The states whose blob must survive the janitor: readable now, or about to be committed.
_HOLDS_BLOB = (PENDING, UPLOADING, COMMITTED)


@dataclass(frozen=True)
class EntryRecord:
    entry_id: str
    tenant: str
    repo: str
    scope: str
    kind: str
    name: str
    key: str
    identity: str
    digest: str | None
    size_bytes: int | None
    compression: str | None
    status: str
    trust_tier: str
    created_at: datetime
    committed_at: datetime | None
    last_used_at: datetime | None
    expires_at: datetime | None
    producer_run_id: str | None
    producer_job: str | None
    producer_attempt_id: str | None
    failure: str | None
    meta: dict[str, Any]


@dataclass(frozen=True)
class CommitResult:
    """``won``: this entry is now the committed one. Otherwise ``entry`` is the winner's."""

    won: bool
    entry: EntryRecord


def _select() -> Select[tuple[Entry, str]]:
    return select(Entry, Tenant.name).join(Tenant, Tenant.id == Entry.tenant_id)


def _record(row: Entry, tenant: str) -> EntryRecord:
    return EntryRecord(
        entry_id=row.id,
        tenant=tenant,
        repo=row.repo,
        scope=row.scope,
        kind=row.kind,
        name=row.name,
        key=row.key,
        identity=row.identity,
        digest=row.digest,
        size_bytes=row.size_bytes,
        compression=row.compression,
        status=row.status,
        trust_tier=row.trust_tier,
        created_at=row.created_at,
        committed_at=row.committed_at,
        last_used_at=row.last_used_at,
        expires_at=row.expires_at,
        producer_run_id=row.producer_run_id,
        producer_job=row.producer_job,
        producer_attempt_id=row.producer_attempt_id,
        failure=row.failure,
        meta=dict(row.meta or {}),
    )


def _tenant_id(session: Session, tenant: str) -> int:
    tenant_id = session.scalar(select(Tenant.id).where(Tenant.name == tenant))
    if tenant_id is None:
        raise NotFound(f"no tenant named {tenant!r}")
    return tenant_id


def reserve(
    session: Session,
    *,
    tenant: str,
    repo: str,
    scope: str,
    kind: str,
    name: str,
    key: str,
    identity: str,
    trust_tier: str,
    at: datetime,
    expires_at: datetime | None = None,
    producer_run_id: str | None = None,
    producer_job: str | None = None,
    producer_attempt_id: str | None = None,
    meta: dict[str, Any] | None = None,
) -> EntryRecord:
    """Create a ``pending`` entry: a writer's claim to upload a blob for ``identity``."""
    row = Entry(
        id=new_id(at),
        tenant_id=_tenant_id(session, tenant),
        repo=repo,
        scope=scope,
        kind=kind,
        name=name,
        key=key,
        identity=identity,
        status=PENDING,
        trust_tier=trust_tier,
        created_at=at,
        expires_at=expires_at,
        producer_run_id=producer_run_id,
        producer_job=producer_job,
        producer_attempt_id=producer_attempt_id,
        meta=meta or {},
    )
    session.add(row)
    session.flush()
    return _record(row, tenant)


def get(session: Session, entry_id: str) -> EntryRecord:
    found = session.execute(_select().where(Entry.id == entry_id)).first()
    if found is None:
        raise NotFound(f"no entry {entry_id}")
    return _record(found[0], found[1])


def mark_uploading(session: Session, entry_id: str, *, digest: str, size_bytes: int) -> EntryRecord:
    """Record the blob a pending entry will commit; allowed again while uploading (a retry)."""
    entry = get(session, entry_id)
    if entry.status not in _OPEN:
        raise Conflict(f"entry {entry_id} is {entry.status}; only a pending entry can start uploading")
    session.execute(
        update(Entry)
        .where(Entry.id == entry_id)
        .values(status=UPLOADING, digest=digest, size_bytes=size_bytes)
        .execution_options(synchronize_session=False)
    )
    return get(session, entry_id)


def commit(
    session: Session,
    entry_id: str,
    *,
    digest: str,
    size_bytes: int,
    at: datetime,
    compression: str | None = None,
    meta: dict[str, Any] | None = None,
) -> CommitResult:
    """Commit an open entry create-only. Idempotent for the winner; the loser ends ``failed``.

    The caller has verified that the blob ``digest`` of ``size_bytes`` is stored.
    """
    entry = get(session, entry_id)
    if entry.status == COMMITTED:
        if entry.digest != digest:
            raise Conflict(f"entry {entry_id} is committed with {entry.digest}, not {digest}")
        return CommitResult(won=True, entry=entry)
    if entry.status not in _OPEN:
        raise Conflict(f"entry {entry_id} is {entry.status} and cannot be committed")
    values: dict[str, Any] = {
        "status": COMMITTED,
        "digest": digest,
        "size_bytes": size_bytes,
        "committed_at": at,
        "last_used_at": at,
    }
    if compression is not None:
        values["compression"] = compression
    if meta is not None:
        values["meta"] = {**entry.meta, **meta}
    try:
        # A savepoint, so losing the race undoes only this statement, not the caller's transaction.
        with session.begin_nested():
            session.execute(
                update(Entry)
                .where(Entry.id == entry_id)
                .values(**values)
                .execution_options(synchronize_session=False)
            )
    except sa_exc.IntegrityError:
        winner = find_committed(session, tenant=entry.tenant, kind=entry.kind, identity=entry.identity)
        fail(session, entry_id, "lost-race", digest=digest, size_bytes=size_bytes)
        if winner is None:  # the winner was deleted in between: impossible under the index, but say so
            raise Conflict(f"entry {entry_id} lost a commit race to an entry that is gone") from None
        return CommitResult(won=False, entry=winner)
    return CommitResult(won=True, entry=get(session, entry_id))


def fail(
    session: Session,
    entry_id: str,
    reason: str,
    *,
    digest: str | None = None,
    size_bytes: int | None = None,
) -> None:
    """Mark an open entry ``failed`` with ``reason``; a committed or closed entry is left alone."""
    values: dict[str, Any] = {"status": FAILED, "failure": reason}
    if digest is not None:
        values["digest"] = digest
        values["size_bytes"] = size_bytes
    session.execute(
        update(Entry)
        .where(Entry.id == entry_id, Entry.status.in_(_OPEN))
        .values(**values)
        .execution_options(synchronize_session=False)
    )


def set_status(session: Session, entry_ids: Iterable[str], status: str, *, reason: str | None = None) -> int:
    """Move committed entries to ``expired`` or ``deleted`` (never back to visible). Returns the count."""
    if status not in (EXPIRED, DELETED):
        raise ValueError(f"set_status only expires or deletes, not {status!r}")
    ids = list(entry_ids)
    if not ids:
        return 0
    result = session.execute(
        update(Entry)
        .where(Entry.id.in_(ids), Entry.status.notin_((DELETED, status)))
        .values(status=status, failure=reason)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def find_committed(session: Session, *, tenant: str, kind: str, identity: str) -> EntryRecord | None:
    found = session.execute(
        _select().where(
            Tenant.name == tenant, Entry.kind == kind, Entry.identity == identity, Entry.status == COMMITTED
        )
    ).first()
    return _record(found[0], found[1]) if found else None


def search(
    session: Session,
    *,
    tenant: str,
    kind: str,
    repo: str | None = None,
    scopes: Sequence[str] | None = None,
    name: str | None = None,
    key: str | None = None,
    statuses: Sequence[str] = (COMMITTED,),
    producer_run_id: str | None = None,
    limit: int = 1000,
) -> list[EntryRecord]:
    """Entries matching every filter given, newest first (by commit, then creation time)."""
    query = _select().where(Tenant.name == tenant, Entry.kind == kind, Entry.status.in_(list(statuses)))
    if repo is not None:
        query = query.where(Entry.repo == repo)
    if scopes is not None:
        query = query.where(Entry.scope.in_(list(scopes)))
    if name is not None:
        query = query.where(Entry.name == name)
    if key is not None:
        query = query.where(Entry.key == key)
    if producer_run_id is not None:
        query = query.where(Entry.producer_run_id == producer_run_id)
    query = query.order_by(Entry.committed_at.desc().nulls_last(), Entry.id.desc()).limit(limit)
    return [_record(row, tenant_name) for row, tenant_name in session.execute(query)]


def touch(session: Session, entry_id: str, *, at: datetime) -> None:
    """Record a restore: the janitor evicts least recently used entries first."""
    session.execute(
        update(Entry)
        .where(Entry.id == entry_id)
        .values(last_used_at=at)
        .execution_options(synchronize_session=False)
    )


def expire_due(session: Session, *, now: datetime, limit: int = 1000) -> list[EntryRecord]:
    """Expire committed entries whose ``expires_at`` has passed; return them (now ``expired``)."""
    due = session.execute(
        _select()
        .where(Entry.status == COMMITTED, Entry.expires_at.is_not(None), Entry.expires_at <= now)
        .order_by(Entry.expires_at)
        .limit(limit)
    ).all()
    set_status(session, [row.id for row, _ in due], EXPIRED, reason="retention")
    return [_record(row, tenant) for row, tenant in due]


def evict_over_quota(
    session: Session, *, kind: str, quota_bytes: int, now: datetime, limit: int = 1000
) -> list[EntryRecord]:
    """Expire the least recently used committed entries of ``kind`` beyond each repository's quota.

    Per (tenant, repository), entries are ranked by their last use (a restore, else their commit),
    newest first; those whose running total of bytes passes ``quota_bytes`` are expired, as if
    their retention had ended: what was used last stays. Entries already past their retention are
    left to :func:`expire_due`. Returns the expired entries (at most ``limit``).
    """
    last_use = func.coalesce(Entry.last_used_at, Entry.committed_at)
    running = (
        func.sum(func.coalesce(Entry.size_bytes, 0))
        .over(
            partition_by=(Entry.tenant_id, Entry.repo),
            order_by=(last_use.desc(), Entry.id.desc()),
            rows=(None, 0),
        )
        .label("running")
    )
    ranked = (
        select(Entry.id, running)
        .where(
            Entry.kind == kind,
            Entry.status == COMMITTED,
            or_(Entry.expires_at.is_(None), Entry.expires_at > now),
        )
        .subquery()
    )
    over = session.scalars(select(ranked.c.id).where(ranked.c.running > quota_bytes).limit(limit)).all()
    if not over:
        return []
    rows = session.execute(_select().where(Entry.id.in_(over))).all()
    set_status(session, over, EXPIRED, reason="quota")
    return [_record(row, tenant) for row, tenant in rows]


def referenced_digests(session: Session) -> set[str]:
    """Digests some pending, uploading or committed entry holds: blobs the janitor must keep."""
    rows = session.scalars(
        select(Entry.digest).where(Entry.status.in_(_HOLDS_BLOB), Entry.digest.is_not(None)).distinct()
    )
    return {digest for digest in rows if digest is not None}
