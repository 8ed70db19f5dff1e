"""Source snapshots: uploaded once by the submitter, fetched by the runner of each job.

Uploads are spooled to disk and hashed while they stream in; only bytes that hash to the digest in
the URL reach the blob store, so a truncated or corrupted upload is refused, never stored.

Blobs are shared between tenants, but a tenant sees only the snapshots it uploaded (a user), or
its run's (a job token): knowing another tenant's digest is not enough to read or run it. A tenant
that uploads bytes already stored still sends them, to prove it has them.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator

from fastapi import APIRouter, Depends, Path, Request, Response
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from kiln.api.access import AccessService
from kiln.api.auth import Principal, current_principal
from kiln.api.plane import ControlPlane
from kiln.api.routes.deps import plane
from kiln.errors import DigestMismatch, NotFound

router = APIRouter(tags=["sources"])
_DIGEST = Path(pattern=r"^sha256:[0-9a-f]{64}$")
_CHUNK = 1024 * 1024


@router.head("/sources/{digest}")
def has_source(
    digest: str = _DIGEST, cp: ControlPlane = Depends(plane), caller: Principal = Depends(current_principal)
) -> Response:
    present = cp.blobs.exists(digest) and AccessService(cp.scheduler).may_use_source(caller, digest)
    return Response(status_code=200 if present else 404)


@router.put("/sources/{digest}", status_code=204)
async def put_source(
    request: Request,
    digest: str = _DIGEST,
    cp: ControlPlane = Depends(plane),
    caller: Principal = Depends(current_principal),
) -> None:
    access = AccessService(cp.scheduler)
    stored = await run_in_threadpool(cp.blobs.exists, digest)
    if stored and await run_in_threadpool(access.may_use_source, caller, digest):
        return
    cp.spool_dir.mkdir(parents=True, exist_ok=True)
    fd, spool = tempfile.mkstemp(prefix="upload-", dir=cp.spool_dir)
    try:
        sha, size = hashlib.sha256(), 0
        with os.fdopen(fd, "wb") as out:
            async for chunk in request.stream():
                sha.update(chunk)
                size += len(chunk)
                out.write(chunk)
        if f"sha256:{sha.hexdigest()}" != digest:
            raise DigestMismatch(f"uploaded source hashes to sha256:{sha.hexdigest()}, not {digest}")
        if not stored:
            await run_in_threadpool(cp.blobs.put, digest, spool, size)
    finally:
        os.unlink(spool)
    await run_in_threadpool(access.record_source, caller, digest)


@router.get("/sources/{digest}")
def get_source(
    digest: str = _DIGEST, cp: ControlPlane = Depends(plane), caller: Principal = Depends(current_principal)
) -> StreamingResponse:
    if not AccessService(cp.scheduler).may_use_source(caller, digest):
        raise NotFound(f"no source {digest}")
    size = cp.blobs.stat(digest)  # BlobNotFound → 404 before any byte is sent

    def body() -> Iterator[bytes]:
        with cp.blobs.open(digest) as reader:
            while chunk := reader.read(_CHUNK):
                yield chunk

    return StreamingResponse(body(), media_type="application/zstd", headers={"Content-Length": str(size)})
