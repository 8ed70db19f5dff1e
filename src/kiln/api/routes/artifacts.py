"""Artifacts: what producers and the jobs that need them call, and what users call to list and download.

Runner calls carry the attempt's lease token in ``X-Kiln-Lease``; the run, job, tenant and the jobs
it needs are those of the attempt, read on the server. User calls name a run and see only the
artifacts of runs their tenant may see.
"""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import StreamingResponse

from kiln.api.plane import ControlPlane
from kiln.api.routes.blobs import _Relayed  # the blob routes' pass-through hasher
from kiln.api.routes.deps import plane
from kiln.artifacts import wire
from kiln.artifacts.service import ArtifactService

router = APIRouter(tags=["artifacts"])
_LEASE = Header(alias="X-Kiln-Lease")
_CHUNK = 1024 * 1024


def artifacts(cp: ControlPlane = Depends(plane)) -> ArtifactService:
    # The service holds no state of its own: the database and the blob store are the plane's.
    return ArtifactService(cp.db, cp.blobs)


def caller_tenant(request: Request) -> str | None:
    """The tenant the caller's token belongs to; None for a token that may see every tenant."""
    return getattr(request.state, "tenant", None)


# -- runners ---------------------------------------------------------------------------------------


@router.post("/attempts/{attempt_id}/artifacts")
def reserve(
    attempt_id: str,
    body: wire.ArtifactReserveIn,
    token: str = _LEASE,
    svc: ArtifactService = Depends(artifacts),
) -> wire.ArtifactOut:
    return svc.reserve(attempt_id, token, body)


@router.post("/attempts/{attempt_id}/artifacts/{artifact_id}/finalize")
def finalize(
    attempt_id: str,
    artifact_id: str,
    body: wire.ArtifactFinalizeIn,
    token: str = _LEASE,
    svc: ArtifactService = Depends(artifacts),
) -> wire.ArtifactOut:
    return svc.finalize(attempt_id, token, artifact_id, body)


@router.post("/attempts/{attempt_id}/artifacts/{artifact_id}/fail")
def fail(
    attempt_id: str,
    artifact_id: str,
    body: wire.ArtifactFailIn,
    token: str = _LEASE,
    svc: ArtifactService = Depends(artifacts),
) -> wire.ArtifactOut:
    return svc.fail(attempt_id, token, artifact_id, body.reason)


@router.get("/attempts/{attempt_id}/needed-artifacts")
def needed(
    attempt_id: str, token: str = _LEASE, svc: ArtifactService = Depends(artifacts)
) -> list[wire.NeededArtifactOut]:
    return svc.needed(attempt_id, token)


# -- users -----------------------------------------------------------------------------------------


@router.get("/runs/{run_id}/artifacts")
def list_artifacts(
    run_id: str,
    all_states: bool = Query(False, alias="all", description="Also failed, expired and deleted ones."),
    tenant: str | None = Depends(caller_tenant),
    svc: ArtifactService = Depends(artifacts),
) -> list[wire.ArtifactOut]:
    return svc.list_run(run_id, tenant=tenant, everything=all_states)


@router.get("/runs/{run_id}/artifacts/{name}")
def get_artifact(
    run_id: str,
    name: str,
    job: str | None = None,
    tenant: str | None = Depends(caller_tenant),
    svc: ArtifactService = Depends(artifacts),
) -> wire.ArtifactOut:
    return svc.get(run_id, name, job=job, tenant=tenant)


@router.get("/runs/{run_id}/artifacts/{name}/archive")
def download(
    run_id: str,
    name: str,
    job: str | None = None,
    tenant: str | None = Depends(caller_tenant),
    svc: ArtifactService = Depends(artifacts),
) -> StreamingResponse:
    artifact = svc.get(run_id, name, job=job, tenant=tenant)
    # The bytes are relayed as stored: the client checks them against X-Kiln-Digest and can say
    # "damaged" instead of seeing a response cut short, which looks like a network fault.
    reader = svc.open_blob(artifact, hasher=_Relayed(artifact.digest or ""))  # BlobNotFound: 404

    def body() -> Iterator[bytes]:
        with reader:
            while chunk := reader.read(_CHUNK):
                yield chunk

    return StreamingResponse(
        body(),
        media_type="application/zstd",
        headers={
            "Content-Length": str(artifact.size_bytes or 0),
            "X-Kiln-Digest": artifact.digest or "",
            "X-Kiln-Artifact-Job": artifact.job,
        },
    )
