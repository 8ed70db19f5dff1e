"""Tokens, tenants and repositories as objects, runner registration and source ownership.

Every secret is stored as the sha256 of its text (:func:`secret_digest`): tokens are 256-bit
random strings, so a plain hash is as hard to reverse as the secret is to guess, and a lookup is
one indexed equality. Job tokens live in ``attempts.lease_token`` (see ``leases.py``); this module
finds the attempt, job, run, tenant and repository a job token was issued for
(:func:`find_job_grant`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, func, insert, select
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session

from kiln.metadata._sql import guarded_update, rowcount
from kiln.metadata.tables import (
    ApiToken,
    Attempt,
    Job,
    Repository,
    Run,
    Runner,
    Tenant,
    TenantSource,
)

__all__ = [
    "JobGrantRecord",
    "RepositoryRecord",
    "TenantRecord",
    "TokenRecord",
    "create_tenant",
    "find_job_grant",
    "find_token",
    "get_tenant",
    "get_token",
    "insert_token",
    "list_repositories",
    "list_tenants",
    "list_tokens",
    "record_source",
    "register_runner",
    "revoke_runner_tokens",
    "revoke_token",
    "secret_digest",
    "tenant_has_source",
    "tenant_id_of",
]


def secret_digest(secret: str) -> str:
    """The stored form of a token: the sha256 of its text, in hex (64 characters)."""
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class TokenRecord:
    token_id: str
    kind: str  # "admin" | "user" | "registration" | "runner"
    tenant: str | None  # None: every tenant (admin tokens, fleet-wide runners)
    name: str
    scopes: tuple[str, ...]
    runner_id: str | None
    created_by: str | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None


@dataclass(frozen=True)
class JobGrantRecord:
    """What a job token was issued for: one attempt of one job, and the run's context."""

    attempt_id: str
    attempt_status: str
    lease_expires_at: datetime
    runner_id: str
    job_id: str
    job_name: str
    run_id: str
    tenant: str
    repo: str
    ref: str
    trust_tier: str
    source_digest: str


@dataclass(frozen=True)
class TenantRecord:
    tenant_id: int
    name: str
    repositories: int
    runs: int


@dataclass(frozen=True)
class RepositoryRecord:
    repository_id: int
    tenant: str
    name: str
    runs: int


# -- tokens ----------------------------------------------------------------------------------------

_TOKEN_COLUMNS = (
    ApiToken.id,
    ApiToken.kind,
    Tenant.name,
    ApiToken.name,
    ApiToken.scopes,
    ApiToken.runner_id,
    ApiToken.created_by,
    ApiToken.created_at,
    ApiToken.expires_at,
    ApiToken.revoked_at,
)


def _token_record(row: Row[Any]) -> TokenRecord:
    return TokenRecord(
        token_id=row[0],
        kind=row[1],
        tenant=row[2],
        name=row[3],
        scopes=tuple(row[4]),
        runner_id=row[5],
        created_by=row[6],
        created_at=row[7],
        expires_at=row[8],
        revoked_at=row[9],
    )


def _tokens() -> Any:
    return select(*_TOKEN_COLUMNS).outerjoin(Tenant, Tenant.id == ApiToken.tenant_id)


def insert_token(
    session: Session,
    *,
    token_id: str,
    secret: str,
    kind: str,
    tenant_id: int | None,
    name: str,
    scopes: tuple[str, ...],
    at: datetime,
    runner_id: str | None = None,
    created_by: str | None = None,
    expires_at: datetime | None = None,
) -> TokenRecord:
    """Store a new token by the digest of ``secret``; the secret itself is never stored.

    Returns
    -------
    TokenRecord
        The stored token.
    """
    session.execute(
        insert(ApiToken).values(
            id=token_id,
            secret_hash=secret_digest(secret),
            kind=kind,
            tenant_id=tenant_id,
            name=name,
            scopes=list(scopes),
            runner_id=runner_id,
            created_by=created_by,
            created_at=at,
            expires_at=expires_at,
            revoked_at=None,
        )
    )
    found = get_token(session, token_id)
    assert found is not None  # inserted just above, in this transaction
    return found


def find_token(session: Session, secret: str) -> TokenRecord | None:
    """Return the token whose secret is ``secret`` (revoked and expired ones included), or ``None``."""
    row = session.execute(_tokens().where(ApiToken.secret_hash == secret_digest(secret))).one_or_none()
    return None if row is None else _token_record(row)


def get_token(session: Session, token_id: str) -> TokenRecord | None:
    """Return the token with this id, or ``None``."""
    row = session.execute(_tokens().where(ApiToken.id == token_id)).one_or_none()
    return None if row is None else _token_record(row)


def list_tokens(
    session: Session, *, tenant: str | None = None, include_revoked: bool = False
) -> list[TokenRecord]:
    """Return tokens, newest first: every tenant's (and tenant-less ones) unless ``tenant`` is given."""
    query = _tokens().order_by(ApiToken.created_at.desc(), ApiToken.id.desc())
    if tenant is not None:
        query = query.where(Tenant.name == tenant)
    if not include_revoked:
        query = query.where(ApiToken.revoked_at.is_(None))
    return [_token_record(row) for row in session.execute(query)]


def revoke_token(session: Session, token_id: str, *, at: datetime) -> bool:
    """Revoke a token from ``at`` on. ``False`` if it was revoked already (or does not exist)."""
    updated = session.execute(
        guarded_update(ApiToken)
        .where(ApiToken.id == token_id, ApiToken.revoked_at.is_(None))
        .values(revoked_at=at)
    )
    return rowcount(updated) == 1


def revoke_runner_tokens(session: Session, runner_id: str, *, at: datetime) -> int:
    """Revoke every live token issued to the runner; return how many."""
    updated = session.execute(
        guarded_update(ApiToken)
        .where(ApiToken.runner_id == runner_id, ApiToken.kind == "runner", ApiToken.revoked_at.is_(None))
        .values(revoked_at=at)
    )
    return rowcount(updated)


def find_job_grant(session: Session, token: str) -> JobGrantRecord | None:
    """Return what the job token ``token`` was issued for, whatever the attempt's state; or ``None``."""
    row = session.execute(
        select(
            Attempt.id,
            Attempt.status,
            Attempt.lease_expires_at,
            Attempt.runner_id,
            Job.id,
            Job.name,
            Run.id,
            Tenant.name,
            Repository.name,
            Run.ref,
            Run.trust_tier,
            Run.source_digest,
        )
        .join(Job, Job.id == Attempt.job_id)
        .join(Run, Run.id == Job.run_id)
        .join(Tenant, Tenant.id == Run.tenant_id)
        .join(Repository, Repository.id == Run.repository_id)
        .where(Attempt.lease_token == secret_digest(token))
    ).one_or_none()
    if row is None:
        return None
    return JobGrantRecord(*row)


# -- tenants and repositories ----------------------------------------------------------------------


def tenant_id_of(session: Session, name: str) -> int | None:
    """The id of the tenant called ``name``, or ``None``."""
    return session.execute(select(Tenant.id).where(Tenant.name == name)).scalar_one_or_none()


def create_tenant(session: Session, name: str) -> tuple[int, bool]:
    """Create the tenant unless it exists (race-safe); return its id and whether it was created."""
    found = tenant_id_of(session, name)
    if found is not None:
        return found, False
    try:
        with session.begin_nested():
            return session.execute(insert(Tenant).values(name=name).returning(Tenant.id)).scalar_one(), True
    except sa_exc.IntegrityError:
        found = tenant_id_of(session, name)
        assert found is not None  # the concurrent creator's row
        return found, False


def _tenant_query() -> Any:
    repositories = (
        select(func.count()).select_from(Repository).where(Repository.tenant_id == Tenant.id)
    ).scalar_subquery()
    runs = (select(func.count()).select_from(Run).where(Run.tenant_id == Tenant.id)).scalar_subquery()
    return select(Tenant.id, Tenant.name, repositories, runs).order_by(Tenant.name)


def list_tenants(session: Session) -> list[TenantRecord]:
    """Every tenant, by name."""
    return [TenantRecord(*row) for row in session.execute(_tenant_query())]


def get_tenant(session: Session, name: str) -> TenantRecord | None:
    """The tenant called ``name``, or ``None``."""
    row = session.execute(_tenant_query().where(Tenant.name == name)).one_or_none()
    return None if row is None else TenantRecord(*row)


def list_repositories(session: Session, tenant_id: int) -> list[RepositoryRecord]:
    """The tenant's repositories, by name, with how many runs each has."""
    runs = (select(func.count()).select_from(Run).where(Run.repository_id == Repository.id)).scalar_subquery()
    query = (
        select(Repository.id, Tenant.name, Repository.name, runs)
        .join(Tenant, Tenant.id == Repository.tenant_id)
        .where(Repository.tenant_id == tenant_id)
        .order_by(Repository.name)
    )
    return [RepositoryRecord(*row) for row in session.execute(query)]


# -- source snapshots ------------------------------------------------------------------------------


def record_source(session: Session, tenant_id: int, digest: str, *, at: datetime) -> None:
    """Record that the tenant uploaded (or was given by an admin) the source snapshot ``digest``."""
    if tenant_has_source(session, tenant_id, digest):
        return
    try:
        with session.begin_nested():
            session.execute(insert(TenantSource).values(tenant_id=tenant_id, digest=digest, created_at=at))
    except sa_exc.IntegrityError:
        pass  # recorded concurrently by another upload of the same bytes


def tenant_has_source(session: Session, tenant_id: int, digest: str) -> bool:
    """Whether the tenant may name the source snapshot ``digest`` in its runs."""
    query = select(TenantSource.digest).where(
        TenantSource.tenant_id == tenant_id, TenantSource.digest == digest
    )
    return session.execute(query).first() is not None


# -- runners ---------------------------------------------------------------------------------------


def register_runner(session: Session, runner_id: str, *, name: str, labels: list[str], at: datetime) -> None:
    """Create or update the runner's row with its name and labels (race-safe)."""
    values = {"name": name, "labels": list(labels), "last_seen": at}
    updated = session.execute(guarded_update(Runner).where(Runner.id == runner_id).values(**values))
    if rowcount(updated) == 1:
        return
    try:
        with session.begin_nested():
            session.execute(insert(Runner).values(id=runner_id, **values))
    except sa_exc.IntegrityError:
        session.execute(guarded_update(Runner).where(Runner.id == runner_id).values(**values))
