"""Caches: what runners call to restore and save them, and what users call to see and remove them.

Runner calls carry the attempt's lease token in ``X-Kiln-Lease``; the tenant, repository, scope
and trust tier of every lookup and save are those of the attempt's run, derived on the server.
User calls are scoped to a tenant.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Header, Query

from kiln.api.auth import scoped_tenant
from kiln.api.plane import ControlPlane
from kiln.api.routes.deps import plane
from kiln.caches import wire
from kiln.caches.service import CacheService

router = APIRouter(tags=["caches"])
_LEASE = Header(alias="X-Kiln-Lease")
# The caller's tenant (an admin names one): another tenant's caches do not exist for a user.
_TENANT = Depends(scoped_tenant)


def caches(cp: ControlPlane = Depends(plane)) -> CacheService:
    # The service holds no state of its own: the database and the blob store are the plane's.
    return CacheService(cp.db, cp.blobs)


# -- runners ---------------------------------------------------------------------------------------


@router.post("/attempts/{attempt_id}/caches/lookup")
def lookup(
    attempt_id: str, body: wire.LookupIn, token: str = _LEASE, svc: CacheService = Depends(caches)
) -> wire.LookupOut:
    return svc.lookup(attempt_id, token, body)


@router.post("/attempts/{attempt_id}/caches/reserve")
def reserve(
    attempt_id: str, body: wire.ReserveIn, token: str = _LEASE, svc: CacheService = Depends(caches)
) -> wire.ReserveOut:
    return svc.reserve(attempt_id, token, body)


@router.post("/attempts/{attempt_id}/caches/entries/{entry_id}/uploading", status_code=204)
def uploading(
    attempt_id: str,
    entry_id: str,
    body: wire.CommitIn,
    token: str = _LEASE,
    svc: CacheService = Depends(caches),
) -> None:
    svc.uploading(attempt_id, token, entry_id, body)


@router.post("/attempts/{attempt_id}/caches/entries/{entry_id}/commit")
def commit(
    attempt_id: str,
    entry_id: str,
    body: wire.CommitIn,
    token: str = _LEASE,
    svc: CacheService = Depends(caches),
) -> wire.CommitOut:
    return svc.commit(attempt_id, token, entry_id, body)


@router.post("/attempts/{attempt_id}/caches/entries/{entry_id}/fail", status_code=204)
def fail(
    attempt_id: str,
    entry_id: str,
    body: wire.FailIn,
    token: str = _LEASE,
    svc: CacheService = Depends(caches),
) -> None:
    svc.fail(attempt_id, token, entry_id, body.reason)


@router.post("/attempts/{attempt_id}/caches/entries/{entry_id}/corrupt")
def corrupt(
    attempt_id: str,
    entry_id: str,
    body: wire.CorruptIn,
    token: str = _LEASE,
    svc: CacheService = Depends(caches),
) -> wire.CorruptOut:
    return svc.report_corrupt(attempt_id, token, entry_id, body)


# -- users -----------------------------------------------------------------------------------------


@router.get("/caches")
def list_caches(
    tenant: str = _TENANT,
    repo: str | None = None,
    name: str | None = None,
    scope: str | None = None,
    limit: int = Query(1000, ge=1, le=10_000),
    svc: CacheService = Depends(caches),
) -> wire.CacheListOut:
    return svc.list_entries(tenant, repo=repo, name=name, scope=scope, limit=limit)


@router.get("/caches/explain")
def explain(
    job: str,
    cache: str,
    tenant: str = _TENANT,
    repo: str | None = None,
    run_id: str | None = None,
    svc: CacheService = Depends(caches),
) -> wire.ExplainOut:
    return svc.explain(tenant, job, cache, repo=repo, run_id=run_id)


@router.post("/caches/remove")
def remove(body: wire.RemoveIn, tenant: str = _TENANT, svc: CacheService = Depends(caches)) -> wire.RemoveOut:
    return svc.remove(tenant, body)
