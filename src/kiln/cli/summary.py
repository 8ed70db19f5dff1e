"""The run summary: the JSON contract of ``kiln run --json`` (and ``kiln submit --wait --json``).

Later capabilities add to each job's ``caches`` and ``artifacts`` lists; existing keys never change
meaning.
"""

from __future__ import annotations

from typing import Any

from kiln.api.models import JobOut, RunOut

__all__ = ["exit_code_for", "run_summary"]


def _job_summary(job: JobOut) -> dict[str, Any]:
    last = job.attempts[-1] if job.attempts else None
    report = last.report if last else {}
    image = {"name": job.image_name, "digest": job.image_digest} if job.image_name else None
    if image is not None and isinstance(report.get("image"), dict):
        image = {**image, **report["image"]}
    return {
        "name": job.name,
        "status": job.status,
        "attempts": len(job.attempts),
        "attempt_history": [
            {"number": a.number, "status": a.status, "runner": a.runner_id} for a in job.attempts
        ],
        "duration_s": round(job.duration_s or 0.0, 3),
        "error": job.error_message,
        "image": image,
        "steps": [
            {
                "name": step.name,
                "status": step.status,
                "exit_code": step.exit_code,
                "killed_by": step.killed_by,
                "duration_s": round(step.duration_s or 0.0, 3),
            }
            for step in (last.steps if last else [])
        ],
        "caches": list(report.get("caches", [])),
        "artifacts": list(report.get("artifacts", [])),
    }


def run_summary(run: RunOut) -> dict[str, Any]:
    return {
        "run_id": run.run_id,
        "status": run.status,
        "workflow": run.workflow_name,
        "tenant": run.tenant,
        "repo": run.repo,
        "ref": run.ref,
        "jobs": [_job_summary(job) for job in run.jobs],
    }


def exit_code_for(run: RunOut) -> int:
    """0 every job succeeded, 1 a job failed or the run was cancelled, 3 kiln could not run a job.

    A job whose custom image could not be built ends ``error``; when the cause was the user's (a
    build step failed, a copy source is missing) rather than kiln's, the run exits 1.
    """
    if run.status == "success":
        return 0
    if run.status == "error":
        errored = [job for job in run.jobs if job.status == "error"]
        return 1 if errored and all(_image_failed_by_user(job) for job in errored) else 3
    return 1


def _image_failed_by_user(job: JobOut) -> bool:
    report = job.attempts[-1].report if job.attempts else {}
    failure = report.get("image", {}).get("failure") if isinstance(report.get("image"), dict) else None
    return isinstance(failure, dict) and failure.get("kind") == "user"
