"""Tenants and their repositories as API objects.

Admins create tenants; a user sees only its own tenant (any other is 404). Repositories are also
created on a run's first submission, as before.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response

from kiln.api.access import AccessService
from kiln.api.access_models import RepositoryIn, RepositoryOut, TenantIn, TenantOut
from kiln.api.auth import Principal, current_principal
from kiln.api.routes.tokens import access

router = APIRouter(tags=["tenants"])


@router.post("/tenants", status_code=201)
def create_tenant(
    body: TenantIn,
    response: Response,
    caller: Principal = Depends(current_principal),
    svc: AccessService = Depends(access),
) -> TenantOut:
    record, created = svc.create_tenant(caller, body.name)
    if not created:
        response.status_code = 200
    return TenantOut.model_validate(record)


@router.get("/tenants")
def list_tenants(
    caller: Principal = Depends(current_principal), svc: AccessService = Depends(access)
) -> list[TenantOut]:
    return [TenantOut.model_validate(t) for t in svc.list_tenants(caller)]


@router.get("/tenants/{tenant}")
def get_tenant(
    tenant: str, caller: Principal = Depends(current_principal), svc: AccessService = Depends(access)
) -> TenantOut:
    return TenantOut.model_validate(svc.get_tenant(caller, tenant))


@router.get("/tenants/{tenant}/repositories")
def list_repositories(
    tenant: str, caller: Principal = Depends(current_principal), svc: AccessService = Depends(access)
) -> list[RepositoryOut]:
    return [RepositoryOut.model_validate(r) for r in svc.list_repositories(caller, tenant)]


@router.post("/tenants/{tenant}/repositories", status_code=201)
def create_repository(
    tenant: str,
    body: RepositoryIn,
    caller: Principal = Depends(current_principal),
    svc: AccessService = Depends(access),
) -> RepositoryOut:
    return RepositoryOut.model_validate(svc.create_repository(caller, tenant, body.name))
