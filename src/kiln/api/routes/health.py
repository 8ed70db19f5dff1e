"""Liveness and readiness: /healthz answers while the process runs, /readyz when the database does."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from kiln.api.plane import ControlPlane
from kiln.api.routes.deps import plane
from kiln.errors import KilnError

router = APIRouter()


@router.get("/healthz")
def healthz() -> dict:
    return {"status": "ok"}


@router.get("/readyz")
def readyz(cp: ControlPlane = Depends(plane)) -> JSONResponse:
    try:
        cp.scheduler.list_runs(limit=1)
    except KilnError as exc:
        return JSONResponse(status_code=503, content={"status": "unavailable", "reason": exc.message})
    return JSONResponse(content={"status": "ready"})
