"""The FastAPI application: one HTTP API for users, the CLI and runners, OpenAPI served at /openapi.json."""

from __future__ import annotations

import hmac

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from kiln import __version__
from kiln.api.plane import ControlPlane
from kiln.api.routes import artifacts, blobs, caches, health, images, runners, runs, sources
from kiln.errors import KilnError, Unauthorized, WorkflowInvalid

__all__ = ["create_app"]

_bearer = HTTPBearer(auto_error=False)


def _error_body(exc: KilnError) -> dict:
    body: dict = {"error": type(exc).__name__, "message": exc.message}
    if isinstance(exc, WorkflowInvalid):
        body["problems"] = [
            {"file": p.file, "line": p.line, "column": p.column, "loc": list(p.loc), "message": p.message}
            for p in exc.problems
        ]
    return body


def create_app(plane: ControlPlane) -> FastAPI:
    def authorize(creds: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> None:
        if plane.api_token is None:
            return
        # Constant-time compare, and the same answer for a missing and a wrong token.
        if creds is None or not hmac.compare_digest(creds.credentials, plane.api_token):
            raise Unauthorized()

    app = FastAPI(title="kiln", version=__version__)
    app.state.plane = plane

    @app.exception_handler(KilnError)
    async def _kiln_error(_: Request, exc: KilnError) -> JSONResponse:
        return JSONResponse(status_code=exc.http_status, content=_error_body(exc))

    app.include_router(health.router)
    for module in (runs, runners, sources, caches, artifacts, blobs, images):
        app.include_router(module.router, prefix="/v1", dependencies=[Depends(authorize)])
    # A signed grant URL is its own authorization, like a presigned S3 URL: no API token.
    app.include_router(blobs.grant_router)
    return app
