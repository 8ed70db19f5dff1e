"""The FastAPI application: one HTTP API for users, the CLI and runners, OpenAPI served at /openapi.json."""

from __future__ import annotations

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse

from kiln import __version__
from kiln.api.auth import authenticate
from kiln.api.metrics import install_metrics
from kiln.api.plane import ControlPlane
from kiln.api.routes import artifacts, blobs, caches, health, images, runners, runs, sources, tenants, tokens
from kiln.errors import KilnError, WorkflowInvalid

__all__ = ["create_app"]


def _error_body(exc: KilnError) -> dict:
    body: dict = {"error": type(exc).__name__, "message": exc.message}
    if isinstance(exc, WorkflowInvalid):
        body["problems"] = [
            {"file": p.file, "line": p.line, "column": p.column, "loc": list(p.loc), "message": p.message}
            for p in exc.problems
        ]
    return body


def create_app(plane: ControlPlane) -> FastAPI:
    app = FastAPI(title="kiln", version=__version__)
    app.state.plane = plane

    @app.exception_handler(KilnError)
    async def _kiln_error(_: Request, exc: KilnError) -> JSONResponse:
        return JSONResponse(status_code=exc.http_status, content=_error_body(exc))

    app.include_router(health.router)
    install_metrics(app, plane)
    # Every /v1 route: the caller's token is resolved and checked first (kiln.api.auth).
    for module in (runs, runners, sources, caches, artifacts, blobs, images, tenants, tokens):
        app.include_router(module.router, prefix="/v1", dependencies=[Depends(authenticate)])
    # A signed grant URL is its own authorization, like a presigned S3 URL: no API token.
    app.include_router(blobs.grant_router)
    return app
