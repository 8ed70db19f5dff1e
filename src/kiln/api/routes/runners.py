"""What runners call: lease a job, heartbeat, report steps, ship logs, complete.

Leasing needs a runner token (or an admin's); the lease's token is the job token, and every call
after the lease carries it in ``X-Kiln-Lease`` (see :mod:`kiln.api.auth`). The scheduler fences a
runner whose lease was reclaimed (HTTP 409, ``LeaseLost``) so it stops the job.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Header, Response

from kiln.api.auth import Principal, current_principal
from kiln.api.contexts import context_in
from kiln.api.models import (
    CompleteIn,
    HeartbeatOut,
    ImageReportIn,
    LeaseIn,
    LeaseOut,
    LogsIn,
    ReleaseIn,
    ReportIn,
    ReportSection,
    StepFinishIn,
    StepStartIn,
)
from kiln.api.plane import ControlPlane
from kiln.api.routes.deps import plane
from kiln.errors import Forbidden
from kiln.images.plan import split_spec
from kiln.scheduler import LogChunk

router = APIRouter(tags=["runners"])
_LEASE = Header(alias="X-Kiln-Lease")


@router.post("/lease", response_model=LeaseOut, responses={204: {"description": "nothing to run"}})
def lease(
    body: LeaseIn, cp: ControlPlane = Depends(plane), caller: Principal = Depends(current_principal)
) -> LeaseOut | Response:
    # A runner token leases as the runner it was issued to, and only its tenant's jobs if it has one.
    if caller.runner_id is not None and body.runner_id != caller.runner_id:
        raise Forbidden(f"this token was issued to runner {caller.runner_id}, not {body.runner_id}")
    job = cp.scheduler.lease_next(body.runner_id, run_id=body.run_id, tenant=caller.tenant)
    if job is None:
        return Response(status_code=204)
    secrets = cp.secrets.get(job.run_id)
    spec, image_plan = split_spec(job.spec)
    ctx = job.context
    return LeaseOut(
        run_id=job.run_id,
        job_id=job.job_id,
        job_name=job.job_name,
        attempt_id=job.attempt_id,
        attempt_number=job.attempt_number,
        lease_token=job.lease_token,
        lease_expires_at=job.lease_expires_at,
        lease_ttl_s=cp.scheduler.lease_ttl_s,
        spec=spec,
        image_plan=image_plan,
        workflow_env=job.workflow_env,
        workflow_name=job.workflow_name,
        source_digest=job.source_digest,
        context=context_in(ctx),
        trust_tier=job.trust_tier,
        secrets=secrets or {},
        secrets_lost=secrets is None,
    )


@router.post("/attempts/{attempt_id}/heartbeat")
def heartbeat(attempt_id: str, token: str = _LEASE, cp: ControlPlane = Depends(plane)) -> HeartbeatOut:
    beat = cp.scheduler.heartbeat(attempt_id, token)
    return HeartbeatOut(expires_at=beat.expires_at, cancel_requested=beat.cancel_requested)


@router.post("/attempts/{attempt_id}/logs", status_code=204)
def append_logs(
    attempt_id: str, body: LogsIn, token: str = _LEASE, cp: ControlPlane = Depends(plane)
) -> None:
    chunks = [LogChunk(seq=c.seq, step_index=c.step_index, data=c.data) for c in body.chunks]
    cp.scheduler.append_logs(attempt_id, token, chunks)


@router.post("/attempts/{attempt_id}/steps/{index}/start", status_code=204)
def step_started(
    attempt_id: str, index: int, body: StepStartIn, token: str = _LEASE, cp: ControlPlane = Depends(plane)
) -> None:
    cp.scheduler.step_started(attempt_id, token, index, body.name)


@router.post("/attempts/{attempt_id}/steps/{index}/finish", status_code=204)
def step_finished(
    attempt_id: str, index: int, body: StepFinishIn, token: str = _LEASE, cp: ControlPlane = Depends(plane)
) -> None:
    cp.scheduler.step_finished(
        attempt_id,
        token,
        index,
        status=body.status,
        exit_code=body.exit_code,
        signal=body.signal,
        killed_by=body.killed_by,
        duration_s=body.duration_s,
    )


@router.post("/attempts/{attempt_id}/image", status_code=204)
def report_image(
    attempt_id: str, body: ImageReportIn, token: str = _LEASE, cp: ControlPlane = Depends(plane)
) -> None:
    cp.scheduler.report_image(attempt_id, token, body.name, body.digest)


@router.put("/attempts/{attempt_id}/report/{section}", status_code=204)
def report(
    attempt_id: str,
    body: ReportIn,
    section: ReportSection,
    token: str = _LEASE,
    cp: ControlPlane = Depends(plane),
) -> None:
    cp.scheduler.report(attempt_id, token, section, body.value)


@router.post("/attempts/{attempt_id}/release", status_code=204)
def release(attempt_id: str, body: ReleaseIn, token: str = _LEASE, cp: ControlPlane = Depends(plane)) -> None:
    """Give the job back (the runner is stopping): it is queued again, this attempt ends ``lost``."""
    cp.scheduler.release_attempt(attempt_id, token, reason=body.reason)


@router.post("/attempts/{attempt_id}/complete", status_code=204)
def complete(
    attempt_id: str, body: CompleteIn, token: str = _LEASE, cp: ControlPlane = Depends(plane)
) -> None:
    cp.scheduler.complete_attempt(attempt_id, token, status=body.status, error_message=body.error_message)
