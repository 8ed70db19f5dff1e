"""Runs, and the tenants and repositories they belong to.

Lock order (PostgreSQL): every operation that changes more than one row of a run locks the run row
first (:func:`get_run` with ``for_update=True``), then its attempts, then its jobs. The lease query
is the one exception, and it never waits: it skips runs and jobs another transaction holds (see
``leases.lease_next_job``). With one order there is no deadlock.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Row, Select, bindparam, insert, select
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session

from kiln.errors import IllegalTransition
from kiln.metadata._sql import guarded_update, rowcount
from kiln.metadata.events import record_event
from kiln.metadata.records import NewRun, RunRecord, RunSummaryRecord
from kiln.metadata.tables import Repository, Run, Tenant

__all__ = [
    "get_or_create_repository",
    "get_or_create_tenant",
    "get_run",
    "insert_run",
    "list_runs",
    "request_cancel",
    "transition_run",
]


def get_or_create_tenant(session: Session, name: str) -> int:
    """Return the id of the tenant called ``name``, creating it if needed.

    Race-safe on both databases: a concurrent creator makes our insert fail on the unique name,
    inside a savepoint, and we read the winner's row.

    Parameters
    ----------
    name
        The tenant's name.

    Returns
    -------
    int
        The tenant's id.
    """
    query = select(Tenant.id).where(Tenant.name == name)
    return _get_or_create(session, query, lambda: insert(Tenant).values(name=name).returning(Tenant.id))


def get_or_create_repository(session: Session, tenant_id: int, name: str) -> int:
    """Return the id of repository ``name`` of the tenant, creating it if needed (race-safe).

    Parameters
    ----------
    tenant_id
        From :func:`get_or_create_tenant`.
    name
        The repository's name, unique within the tenant.

    Returns
    -------
    int
        The repository's id.
    """
    query = select(Repository.id).where(Repository.tenant_id == tenant_id, Repository.name == name)
    return _get_or_create(
        session,
        query,
        lambda: insert(Repository).values(tenant_id=tenant_id, name=name).returning(Repository.id),
    )


def _get_or_create(session: Session, query: Select[tuple[int]], make_insert: Any) -> int:
    found = session.execute(query).scalar_one_or_none()
    if found is not None:
        return found
    try:
        with session.begin_nested():
            return session.execute(make_insert()).scalar_one()
    except sa_exc.IntegrityError:
        # Lost the race to a concurrent creator; its row is committed now (READ COMMITTED sees it).
        return session.execute(query).scalar_one()


def insert_run(session: Session, run: NewRun) -> None:
    """Insert a run and its creation event.

    Parameters
    ----------
    run
        Every column of the new run.
    """
    session.execute(
        insert(Run).values(
            id=run.run_id,
            tenant_id=run.tenant_id,
            repository_id=run.repository_id,
            workflow_name=run.workflow_name,
            workflow_json=run.workflow_json,
            workflow_text=run.workflow_text,
            source_digest=run.source_digest,
            ref=run.ref,
            default_branch=run.default_branch,
            event=run.event,
            base_ref=run.base_ref,
            is_fork=run.is_fork,
            pull_request=run.pull_request,
            protected_refs=list(run.protected_refs),
            trust_tier=run.trust_tier,
            status=run.status,
            submitted_by=run.submitted_by,
            created_at=run.created_at,
            cancel_requested=False,
        )
    )
    record_event(
        session,
        run_id=run.run_id,
        subject="run",
        from_state=None,
        to_state=run.status,
        event="submitted",
        at=run.created_at,
        detail=f"trust tier {run.trust_tier}",
    )


_RUN_COLUMNS = (
    Run.id,
    Tenant.name,
    Repository.name,
    Run.workflow_name,
    Run.workflow_json,
    Run.source_digest,
    Run.ref,
    Run.default_branch,
    Run.event,
    Run.base_ref,
    Run.is_fork,
    Run.protected_refs,
    Run.trust_tier,
    Run.status,
    Run.submitted_by,
    Run.created_at,
    Run.started_at,
    Run.finished_at,
    Run.cancel_requested,
    Run.pull_request,  # last: added by migration 0008
)


def get_run(
    session: Session, run_id: str, *, tenant: str | None = None, for_update: bool = False
) -> RunRecord | None:
    """Return the run, or ``None`` if there is none (or it belongs to another tenant).

    Parameters
    ----------
    run_id
        The run.
    tenant
        When given, a run of any other tenant is reported as absent.
    for_update
        Lock the run row until the transaction ends (PostgreSQL ``FOR NO KEY UPDATE``, which does
        not block inserts that reference the run; SQLite's write transaction already excludes
        every other writer). Take it before touching the run's jobs or attempts.

    Returns
    -------
    RunRecord | None
        The run as stored.
    """
    query = (
        select(*_RUN_COLUMNS)
        .join(Tenant, Tenant.id == Run.tenant_id)
        .join(Repository, Repository.id == Run.repository_id)
        .where(Run.id == run_id)
    )
    if tenant is not None:
        query = query.where(Tenant.name == tenant)
    if for_update:
        query = query.with_for_update(of=Run, key_share=True)
    row = session.execute(query).one_or_none()
    return None if row is None else _run_record(row)


def _run_record(row: Row[Any]) -> RunRecord:
    return RunRecord(
        run_id=row[0],
        tenant=row[1],
        repo=row[2],
        workflow_name=row[3],
        workflow_json=row[4],
        source_digest=row[5],
        ref=row[6],
        default_branch=row[7],
        event=row[8],
        base_ref=row[9],
        is_fork=row[10],
        pull_request=row[19],
        protected_refs=tuple(row[11]),
        trust_tier=row[12],
        status=row[13],
        submitted_by=row[14],
        created_at=row[15],
        started_at=row[16],
        finished_at=row[17],
        cancel_requested=row[18],
    )


def list_runs(session: Session, *, tenant: str | None = None, limit: int = 50) -> list[RunSummaryRecord]:
    """Return the newest runs first, without their workflow documents.

    Parameters
    ----------
    tenant
        Only this tenant's runs, when given.
    limit
        At most this many.

    Returns
    -------
    list[RunSummaryRecord]
        Newest first.
    """
    query = (
        select(
            Run.id,
            Tenant.name,
            Repository.name,
            Run.ref,
            Run.workflow_name,
            Run.status,
            Run.trust_tier,
            Run.created_at,
            Run.started_at,
            Run.finished_at,
        )
        .join(Tenant, Tenant.id == Run.tenant_id)
        .join(Repository, Repository.id == Run.repository_id)
        .order_by(Run.created_at.desc(), Run.id.desc())
        .limit(limit)
    )
    if tenant is not None:
        tenant_id = session.execute(select(Tenant.id).where(Tenant.name == tenant)).scalar_one_or_none()
        if tenant_id is None:
            return []
        # The id is rendered into the statement (an integer from the database, never user text) so
        # that PostgreSQL plans with this tenant's statistics: with a parameter (or a join on the
        # name) it walks every tenant's runs newest first, filtering, when the tenant has few runs:
        # linear in the whole table instead of reading this tenant's newest rows from its index.
        query = query.where(Run.tenant_id == bindparam("tenant_id", tenant_id, literal_execute=True))
    return [
        RunSummaryRecord(
            run_id=r[0],
            tenant=r[1],
            repo=r[2],
            ref=r[3],
            workflow_name=r[4],
            status=r[5],
            trust_tier=r[6],
            created_at=r[7],
            started_at=r[8],
            finished_at=r[9],
        )
        for r in session.execute(query)
    ]


def transition_run(
    session: Session,
    run_id: str,
    *,
    from_state: str,
    to_state: str,
    event: str,
    at: datetime,
    started_at: datetime | None = None,
    finished_at: datetime | None = None,
    detail: str | None = None,
) -> None:
    """Move a run from ``from_state`` to ``to_state`` with a guarded ``UPDATE``, and record it.

    Parameters
    ----------
    from_state, to_state, event
        As chosen by ``kiln.scheduler.run_states.next_state``.
    started_at, finished_at
        Stamped when given.

    Raises
    ------
    IllegalTransition
        The run is not in ``from_state`` (any more).
    """
    values: dict[str, Any] = {"status": to_state}
    if started_at is not None:
        values["started_at"] = started_at
    if finished_at is not None:
        values["finished_at"] = finished_at
    updated = session.execute(
        guarded_update(Run).where(Run.id == run_id, Run.status == from_state).values(**values)
    )
    if rowcount(updated) != 1:
        raise IllegalTransition(f"run {run_id}: {event} needs state {from_state}, which it is no longer in")
    record_event(
        session,
        run_id=run_id,
        subject="run",
        from_state=from_state,
        to_state=to_state,
        event=event,
        at=at,
        detail=detail,
    )


def request_cancel(session: Session, run_id: str) -> bool:
    """Flag the run as cancelled by its user; running attempts learn it from their heartbeat.

    Returns
    -------
    bool
        ``True`` if the flag was newly set, ``False`` if it was set already.
    """
    updated = session.execute(
        guarded_update(Run)
        .where(Run.id == run_id, Run.cancel_requested.is_(False))
        .values(cancel_requested=True)
    )
    return rowcount(updated) == 1
