"""Liveness and readiness: /healthz answers while the process runs, /readyz when it can serve.

Ready means: the database answers and its schema is the one this kiln ships (an older server
during a rolling upgrade, or a newer one before ``kiln server migrate``, is not ready), and the
blob store answers. Neither endpoint needs a token, so load balancers and orchestrators can probe.
"""

from __future__ import annotations

from functools import cache

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from kiln.api.plane import ControlPlane
from kiln.api.routes.deps import plane
from kiln.errors import KilnError
from kiln.metadata.db import Database

router = APIRouter(tags=["health"])

_PROBE_DIGEST = "sha256:" + "0" * 64  # never stored: a cheap existence check of the store


@cache
def _head_revision() -> str:
    return Database.head_revision()  # reads the migration scripts: once per process


@router.get("/healthz")
def healthz() -> dict:
    return {"status": "ok"}


def _readiness(cp: ControlPlane) -> tuple[int, dict]:
    checks: dict[str, str] = {}
    try:
        revision = cp.db.schema_revision()
        head = _head_revision()
        checks["database"] = "ok" if revision == head else f"schema at {revision}, this server needs {head}"
    except KilnError as exc:
        checks["database"] = exc.message
    try:
        cp.blobs.exists(_PROBE_DIGEST)
        checks["storage"] = "ok"
    except KilnError as exc:
        checks["storage"] = exc.message
    ready = all(v == "ok" for v in checks.values())
    return (200 if ready else 503), {"status": "ready" if ready else "unavailable", "checks": checks}


@router.get("/readyz")
async def readyz(cp: ControlPlane = Depends(plane)) -> JSONResponse:
    status, body = await run_in_threadpool(_readiness, cp)
    return JSONResponse(status_code=status, content=body)
