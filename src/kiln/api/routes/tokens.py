"""Tokens, runner registration and ``whoami``: the API of :mod:`kiln.api.access`."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query

from kiln.api.access import AccessService
from kiln.api.access_models import (
    PrincipalOut,
    RegisteredOut,
    RegisterIn,
    TokenCreatedOut,
    TokenCreateIn,
    TokenOut,
)
from kiln.api.auth import Principal, current_principal
from kiln.api.plane import ControlPlane
from kiln.api.routes.deps import plane

router = APIRouter(tags=["tokens"])


def access(cp: ControlPlane = Depends(plane)) -> AccessService:
    return AccessService(cp.scheduler)


@router.get("/whoami")
def whoami(caller: Principal = Depends(current_principal)) -> PrincipalOut:
    return PrincipalOut(
        kind=caller.kind.value,
        tenant=caller.tenant,
        scopes=sorted(caller.scopes),
        name=caller.name,
        token_id=caller.token_id,
        runner_id=caller.runner_id,
        attempt_id=caller.job.attempt_id if caller.job else None,
    )


@router.post("/tokens", status_code=201)
def create_token(
    body: TokenCreateIn,
    caller: Principal = Depends(current_principal),
    svc: AccessService = Depends(access),
) -> TokenCreatedOut:
    return svc.create_token(caller, body)


@router.get("/tokens")
def list_tokens(
    tenant: str | None = None,
    revoked: bool = Query(False, description="Also revoked tokens."),
    caller: Principal = Depends(current_principal),
    svc: AccessService = Depends(access),
) -> list[TokenOut]:
    return svc.list_tokens(caller, tenant, include_revoked=revoked)


@router.post("/tokens/{token_id}/revoke")
def revoke_token(
    token_id: str, caller: Principal = Depends(current_principal), svc: AccessService = Depends(access)
) -> TokenOut:
    return svc.revoke_token(caller, token_id)


@router.post("/runners/register", status_code=201)
def register_runner(
    body: RegisterIn, caller: Principal = Depends(current_principal), svc: AccessService = Depends(access)
) -> RegisteredOut:
    return svc.register_runner(caller, body.name, body.labels)
