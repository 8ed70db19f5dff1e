"""Cache lookups: what a job's cache restore looked for and found (``kiln cache explain``).

A row is written by the control plane's cache service when a runner asks for a cache, and updated
when the runner reports the entry it got as corrupt. Nothing else reads or writes the table.
:func:`extend_expiry` is the one cache-specific change to ``entries``: a restore keeps an entry alive.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from kiln.metadata.ids import new_id
from kiln.metadata.tables import CacheLookup, Entry, Tenant

__all__ = ["LookupRecord", "extend_expiry", "latest_lookup", "record_lookup", "set_outcome"]


@dataclass(frozen=True)
class LookupRecord:
    lookup_id: str
    tenant: str
    repo: str
    run_id: str
    attempt_id: str
    job: str
    name: str
    cache_type: str
    scope: str
    trust_tier: str
    readable_scopes: list[str]
    key: str
    version: str
    document: dict[str, Any]
    outcome: str
    matched_entry_id: str | None
    created_at: datetime


def _record(row: CacheLookup, tenant: str) -> LookupRecord:
    return LookupRecord(
        lookup_id=row.id,
        tenant=tenant,
        repo=row.repo,
        run_id=row.run_id,
        attempt_id=row.attempt_id,
        job=row.job,
        name=row.name,
        cache_type=row.cache_type,
        scope=row.scope,
        trust_tier=row.trust_tier,
        readable_scopes=list(row.readable_scopes),
        key=row.key,
        version=row.version,
        document=dict(row.document),
        outcome=row.outcome,
        matched_entry_id=row.matched_entry_id,
        created_at=row.created_at,
    )


def record_lookup(
    session: Session,
    *,
    tenant: str,
    repo: str,
    run_id: str,
    attempt_id: str,
    job: str,
    name: str,
    cache_type: str,
    scope: str,
    trust_tier: str,
    readable_scopes: list[str],
    key: str,
    version: str,
    document: dict[str, Any],
    outcome: str,
    matched_entry_id: str | None,
    at: datetime,
) -> LookupRecord:
    """Insert one lookup row (the tenant must exist: it owns the run)."""
    tenant_id = session.scalar(select(Tenant.id).where(Tenant.name == tenant))
    row = CacheLookup(
        id=new_id(at),
        tenant_id=tenant_id,
        repo=repo,
        run_id=run_id,
        attempt_id=attempt_id,
        job=job,
        name=name,
        cache_type=cache_type,
        scope=scope,
        trust_tier=trust_tier,
        readable_scopes=readable_scopes,
        key=key,
        version=version,
        document=document,
        outcome=outcome,
        matched_entry_id=matched_entry_id,
        created_at=at,
    )
    session.add(row)
    session.flush()
    return _record(row, tenant)


def set_outcome(session: Session, *, attempt_id: str, name: str, outcome: str) -> None:
    """Change the outcome of an attempt's lookup of cache ``name`` (a hit found corrupt)."""
    session.execute(
        update(CacheLookup)
        .where(CacheLookup.attempt_id == attempt_id, CacheLookup.name == name)
        .values(outcome=outcome)
        .execution_options(synchronize_session=False)
    )


def latest_lookup(
    session: Session,
    *,
    tenant: str,
    job: str,
    name: str,
    repo: str | None = None,
    run_id: str | None = None,
) -> LookupRecord | None:
    """The newest lookup of cache ``name`` by job ``job``, optionally in one repository or run."""
    query = (
        select(CacheLookup, Tenant.name)
        .join(Tenant, Tenant.id == CacheLookup.tenant_id)
        .where(Tenant.name == tenant, CacheLookup.job == job, CacheLookup.name == name)
    )
    if repo is not None:
        query = query.where(CacheLookup.repo == repo)
    if run_id is not None:
        query = query.where(CacheLookup.run_id == run_id)
    found = session.execute(query.order_by(CacheLookup.created_at.desc(), CacheLookup.id.desc())).first()
    return _record(found[0], found[1]) if found else None


def extend_expiry(session: Session, entry_id: str, *, expires_at: datetime) -> None:
    """Push a committed cache entry's expiry out (it was just restored: caches expire unused)."""
    session.execute(
        update(Entry)
        .where(Entry.id == entry_id, Entry.status == "committed", Entry.expires_at < expires_at)
        .values(expires_at=expires_at)
        .execution_options(synchronize_session=False)
    )
