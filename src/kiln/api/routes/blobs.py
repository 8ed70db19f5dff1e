"""Blob transfers for runners, which hold no storage credentials.

Two routers:

* ``router`` (below ``/v1``, behind the API token like every runner call): open or resume an upload
  session, get grants for its parts, complete or abort it, get a download grant. Each call carries
  the attempt's lease token in ``X-Kiln-Lease`` and is fenced like the other attempt calls.
* ``grant_router`` (``/v1/grant``): where HMAC grants point when the store is the file backend. A
  signed URL is the whole authorization here, as with a presigned S3 URL, so no API token is asked
  for. Bytes stream through: a blob PUT is spooled to disk and verified against its digest before it
  is published; a part is at most one part size in memory; a GET streams from the file.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import tempfile
import time
from collections.abc import Iterator

from fastapi import APIRouter, Depends, Header, Request, Response
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from kiln.api.blob_models import (
    DownloadGrantIn,
    DownloadGrantOut,
    GrantOut,
    PartGrantsIn,
    PartGrantsOut,
    PartIn,
    UploadCompleteIn,
    UploadCompleteOut,
    UploadStartIn,
    UploadStartOut,
)
from kiln.api.blob_sessions import GRANT_MOUNT, PROVE, BlobSessions, Granted, challenge_of
from kiln.api.plane import ControlPlane
from kiln.api.routes.deps import plane
from kiln.errors import DigestMismatch, NotFound, UsageError
from kiln.storage import BlobStore, PartEntry, WriteOutcome, grants
from kiln.storage.digests import digest_to_hex

__all__ = ["grant_router", "router"]

router = APIRouter(tags=["blobs"])
grant_router = APIRouter(prefix=GRANT_MOUNT, tags=["blob grants"])
_LEASE = Header(alias="X-Kiln-Lease")
_CHUNK = 1024 * 1024
_RANGE_RE = re.compile(r"bytes=(\d+)-$")


def sessions(request: Request) -> BlobSessions:
    """The app's one :class:`BlobSessions`, made on first use from the control plane."""
    found: BlobSessions | None = getattr(request.app.state, "blob_sessions", None)
    if found is None:
        cp: ControlPlane = request.app.state.plane
        found = request.app.state.blob_sessions = BlobSessions(cp.db, cp.blobs, cp.blob_policy)
    return found


def _grant(granted: Granted) -> GrantOut:
    return GrantOut(url=granted.url, headers=granted.headers, expires_in_s=granted.expires_in_s)


def _parts(parts: list[PartIn] | None) -> list[PartEntry] | None:
    if parts is None:
        return None
    return [PartEntry(p.part_number, p.size_bytes, p.etag) for p in parts]


# -- runner calls ------------------------------------------------------------------------------------


@router.post("/attempts/{attempt_id}/blobs/uploads", response_model=UploadStartOut)
def start_upload(
    attempt_id: str, body: UploadStartIn, token: str = _LEASE, blobs: BlobSessions = Depends(sessions)
) -> UploadStartOut:
    """Start (or resume, with ``resume_upload_id``) the upload of a blob; ``exists`` means upload nothing."""
    started = blobs.start(
        attempt_id, token, body.digest, body.size_bytes, body.resume_upload_id, proof=body.proof
    )
    if started.challenge is not None:
        return UploadStartOut(exists=False, challenge=started.challenge)
    if started.exists or started.session is None:
        return UploadStartOut(exists=True)
    record = started.session
    return UploadStartOut(
        exists=False,
        session_id=record.session_id,
        upload_id=record.upload_id,
        part_size=record.part_size,
        resumed=started.resumed,
        parts=[
            PartIn(part_number=p.part_number, size_bytes=p.size_bytes, etag=p.etag) for p in started.parts
        ],
        grants={n: _grant(g) for n, g in started.grants.items()},
        put=_grant(started.put) if started.put is not None else None,
    )


@router.post("/attempts/{attempt_id}/blobs/uploads/{session_id}/grants", response_model=PartGrantsOut)
def part_grants(
    attempt_id: str,
    session_id: str,
    body: PartGrantsIn,
    token: str = _LEASE,
    blobs: BlobSessions = Depends(sessions),
) -> PartGrantsOut:
    """Fresh grants for parts of the session (a single-put session gets its PUT grant)."""
    by_part, put = blobs.grants(attempt_id, token, session_id, body.part_numbers)
    return PartGrantsOut(
        grants={n: _grant(g) for n, g in by_part.items()}, put=_grant(put) if put is not None else None
    )


@router.post("/attempts/{attempt_id}/blobs/uploads/{session_id}/complete", response_model=UploadCompleteOut)
def complete_upload(
    attempt_id: str,
    session_id: str,
    body: UploadCompleteIn,
    token: str = _LEASE,
    blobs: BlobSessions = Depends(sessions),
) -> UploadCompleteOut:
    """Complete the session's upload; the control plane checks the blob is stored with its size."""
    outcome, size = blobs.complete(
        attempt_id, token, session_id, _parts(body.parts), existed=body.existed, proof=body.proof
    )
    challenge = challenge_of(attempt_id) if outcome == PROVE else None
    return UploadCompleteOut(outcome=outcome, size_bytes=size, challenge=challenge)  # type: ignore[arg-type]


@router.post("/attempts/{attempt_id}/blobs/uploads/{session_id}/abort", status_code=204)
def abort_upload(
    attempt_id: str, session_id: str, token: str = _LEASE, blobs: BlobSessions = Depends(sessions)
) -> None:
    """Abort the session and its multipart upload (an ended session is left alone)."""
    blobs.abort(attempt_id, token, session_id)


@router.post("/attempts/{attempt_id}/blobs/download", response_model=DownloadGrantOut)
def download_grant(
    attempt_id: str, body: DownloadGrantIn, token: str = _LEASE, blobs: BlobSessions = Depends(sessions)
) -> DownloadGrantOut:
    """A GET grant for one blob the attempt's tenant references (404 otherwise, or if not stored)."""
    size, granted = blobs.download(attempt_id, token, body.digest)
    return DownloadGrantOut(digest=body.digest, size_bytes=size, grant=_grant(granted))


# -- what HMAC grants point at (file backend) -------------------------------------------------------


def _secret(store: BlobStore) -> bytes:
    secret: bytes | None = getattr(store, "grant_secret", None)
    if secret is None:
        raise NotFound("this control plane's blob store grants its own URLs; it serves no blobs itself")
    return secret


class _Relayed:
    """A hasher that lets the store's reader relay bytes unchecked: the grant holder verifies them.

    The holder hashes the whole blob and raises DigestMismatch itself; a check here could only cut
    the response short, which the holder would take for a network fault and retry.
    """

    def __init__(self, digest: str) -> None:
        self._hex = digest_to_hex(digest)

    def update(self, data: bytes, /) -> None:
        pass

    def hexdigest(self) -> str:
        return self._hex


@grant_router.get("/blobs/sha256/{hex_digest}")
def get_granted_blob(
    hex_digest: str, request: Request, cp: ControlPlane = Depends(plane)
) -> StreamingResponse:
    """Stream the blob a GET grant names (``Range: bytes=N-`` resumes a broken download)."""
    digest = grants.verify_url(str(request.url), "GET", _secret(cp.blobs), now=time.time())
    offset = 0
    if (wanted := request.headers.get("range")) is not None:
        match = _RANGE_RE.fullmatch(wanted.strip())
        if match is None:
            raise UsageError(f"only 'Range: bytes=N-' is served, not {wanted!r}")
        offset = int(match.group(1))
    size = cp.blobs.stat(digest)  # BlobNotFound: 404 before any byte is sent
    if offset > size:
        return Response(status_code=416, headers={"Content-Range": f"bytes */{size}"})
    reader = cp.blobs.open(digest, offset=offset, hasher=_Relayed(digest))

    def body() -> Iterator[bytes]:
        with reader:
            while chunk := reader.read(_CHUNK):
                yield chunk

    headers = {"Content-Length": str(size - offset)}
    if offset:
        headers["Content-Range"] = f"bytes {offset}-{size - 1}/{size}"
    return StreamingResponse(
        body(), status_code=206 if offset else 200, media_type="application/octet-stream", headers=headers
    )


@grant_router.put("/blobs/sha256/{hex_digest}")
async def put_granted_blob(hex_digest: str, request: Request, cp: ControlPlane = Depends(plane)) -> Response:
    """Store the blob a PUT grant names: spooled, verified, published create-only (412 if it exists)."""
    digest = grants.verify_url(str(request.url), "PUT", _secret(cp.blobs), now=time.time())
    if await run_in_threadpool(cp.blobs.exists, digest):
        return Response(status_code=412)
    cp.spool_dir.mkdir(parents=True, exist_ok=True)
    fd, spool = tempfile.mkstemp(prefix="granted-", dir=cp.spool_dir)
    try:
        size = 0
        with os.fdopen(fd, "wb") as out:
            async for chunk in request.stream():
                out.write(chunk)
                size += len(chunk)
        # put() hashes the bytes and publishes them only if they are this digest.
        outcome = await run_in_threadpool(cp.blobs.put, digest, spool, size)
    finally:
        os.unlink(spool)
    return Response(status_code=412 if outcome is WriteOutcome.EXISTED else 200)


@grant_router.put("/uploads/{upload_id}/parts/{part_number}")
async def put_granted_part(
    upload_id: str,
    part_number: int,
    request: Request,
    cp: ControlPlane = Depends(plane),
    blobs: BlobSessions = Depends(sessions),
    content_md5: str | None = Header(default=None, alias="Content-MD5"),
) -> Response:
    """Store one part a part grant names; refuse it if it is longer than a part or fails its Content-MD5."""
    upload_id, part_number = grants.verify_part_url(
        str(request.url), "PUT", _secret(cp.blobs), now=time.time()
    )
    record = await run_in_threadpool(blobs.open_session_of_upload, upload_id)
    limit = record.part_size or 0
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > limit:
            raise UsageError(
                f"part {part_number} of upload {upload_id} is longer than its {limit}-byte parts"
            )
    if content_md5 is not None:
        try:
            expected = base64.b64decode(content_md5, validate=True)
        except binascii.Error:
            raise UsageError(f"Content-MD5 {content_md5!r} is not base64") from None
        if hashlib.md5(data).digest() != expected:
            raise DigestMismatch(f"part {part_number} of upload {upload_id} does not match its Content-MD5")
    etag = await run_in_threadpool(cp.blobs.upload_part, upload_id, part_number, bytes(data))
    return Response(status_code=200, headers={"ETag": f'"{etag}"'})
