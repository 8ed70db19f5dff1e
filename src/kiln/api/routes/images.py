"""Image layers: what runners call to find, claim and publish layers, and what users list.

Runner calls carry the attempt's lease token in ``X-Kiln-Lease``; the tenant and trust tier of
every lookup and claim are those of the attempt's run, derived on the server
(:mod:`kiln.images.service`). User calls see their own tenant's layers only.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Header, Query

from kiln.api.auth import scoped_tenant
from kiln.api.plane import ControlPlane
from kiln.api.routes.deps import plane
from kiln.images import wire
from kiln.images.service import LayerService

router = APIRouter(tags=["images"])
_LEASE = Header(alias="X-Kiln-Lease")


def layers(cp: ControlPlane = Depends(plane)) -> LayerService:
    return LayerService(cp.db, cp.blobs)


@router.post("/attempts/{attempt_id}/images/layers/lookup")
def lookup(
    attempt_id: str, body: wire.LookupIn, token: str = _LEASE, svc: LayerService = Depends(layers)
) -> wire.LookupOut:
    with svc.attempt_scope(attempt_id, token) as (session, scope):
        return svc.lookup(session, scope, body.keys)


@router.post("/attempts/{attempt_id}/images/layers/claim")
def claim(
    attempt_id: str, body: wire.ClaimIn, token: str = _LEASE, svc: LayerService = Depends(layers)
) -> wire.ClaimOut:
    with svc.attempt_scope(attempt_id, token) as (session, scope):
        return svc.claim(session, scope, body)


@router.post("/attempts/{attempt_id}/images/layers/{entry_id}/publish")
def publish(
    attempt_id: str,
    entry_id: str,
    body: wire.PublishIn,
    token: str = _LEASE,
    svc: LayerService = Depends(layers),
) -> wire.LayerOut:
    with svc.attempt_scope(attempt_id, token) as (session, scope):
        return svc.publish(session, scope, entry_id, body)


@router.post("/attempts/{attempt_id}/images/layers/{entry_id}/fail", status_code=204)
def fail(
    attempt_id: str,
    entry_id: str,
    body: wire.FailIn,
    token: str = _LEASE,
    svc: LayerService = Depends(layers),
) -> None:
    with svc.attempt_scope(attempt_id, token) as (session, scope):
        svc.abandon(session, scope, entry_id, body.reason)


@router.get("/images/layers")
def list_layers(
    tenant: str = Depends(scoped_tenant),
    image: str | None = None,
    limit: int = Query(1000, ge=1, le=10_000),
    svc: LayerService = Depends(layers),
) -> wire.LayerListOut:
    return svc.list_layers(tenant, image=image, limit=limit)
