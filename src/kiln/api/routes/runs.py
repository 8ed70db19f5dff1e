"""Runs: submit, inspect, list, cancel, and read their logs.

Each caller sees only its tenant's runs (an admin sees all): another tenant's run is 404, as if
it did not exist. A run may name only a source snapshot its tenant uploaded.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends

from kiln.api.access import AccessService
from kiln.api.auth import Principal, current_principal, tenant_filter
from kiln.api.contexts import run_context
from kiln.api.models import LogLineOut, LogsOut, RunOut, RunSummaryOut, SubmitIn
from kiln.api.plane import ControlPlane
from kiln.api.routes.deps import plane
from kiln.errors import NotFound
from kiln.images.plan import with_image_plan
from kiln.spec import parse_workflow

router = APIRouter(tags=["runs"])


@router.post("/runs", status_code=201)
def submit(
    body: SubmitIn, cp: ControlPlane = Depends(plane), caller: Principal = Depends(current_principal)
) -> RunOut:
    ctx = body.context
    caller.require_tenant(ctx.tenant)
    workflow = parse_workflow(body.workflow_text, body.workflow_filename)
    if not cp.blobs.exists(body.source_digest) or not AccessService(cp.scheduler).may_use_source(
        caller, body.source_digest
    ):
        raise NotFound(f"source {body.source_digest} was not uploaded; PUT it to /v1/sources first")
    view = cp.scheduler.submit_run(
        run_context(ctx),
        workflow_name=workflow.name,
        jobs=[(name, with_image_plan(workflow, job, body.lock)) for name, job in workflow.jobs.items()],
        workflow_json=workflow.model_dump(mode="json"),
        workflow_text=body.workflow_text,
        source_digest=body.source_digest,
        submitted_by=caller.token_id or caller.name,
    )
    cp.secrets.put(view.run_id, body.secrets)
    return RunOut.model_validate(view)


@router.get("/runs")
def list_runs(
    limit: int = 50, cp: ControlPlane = Depends(plane), tenant: str | None = Depends(tenant_filter)
) -> list[RunSummaryOut]:
    return [RunSummaryOut.model_validate(r) for r in cp.scheduler.list_runs(tenant=tenant, limit=limit)]


@router.get("/runs/{run_id}")
def get_run(
    run_id: str, cp: ControlPlane = Depends(plane), caller: Principal = Depends(current_principal)
) -> RunOut:
    return RunOut.model_validate(cp.scheduler.get_run(run_id, tenant=caller.tenant))


@router.post("/runs/{run_id}/cancel")
def cancel_run(
    run_id: str, cp: ControlPlane = Depends(plane), caller: Principal = Depends(current_principal)
) -> RunOut:
    return RunOut.model_validate(cp.scheduler.cancel_run(run_id, tenant=caller.tenant))


@router.get("/runs/{run_id}/logs")
def get_logs(
    run_id: str,
    after: int = 0,
    job: str | None = None,
    limit: int = 1000,
    cp: ControlPlane = Depends(plane),
    caller: Principal = Depends(current_principal),
) -> LogsOut:
    page = cp.scheduler.get_logs(run_id, job=job, after=after, limit=limit, tenant=caller.tenant)
    return LogsOut(
        lines=[LogLineOut.model_validate(line) for line in page.lines], cursor=page.cursor, at_end=page.at_end
    )
