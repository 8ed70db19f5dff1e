"""Helpers for the metadata and scheduler integration tests."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from kiln.metadata import entries
from kiln.metadata.db import Database
from kiln.metadata.runs import get_or_create_tenant
from kiln.scheduler import LeasedJob, RunContext, RunView, Scheduler

__all__ = ["START", "TTL_S", "FakeClock", "complete", "lease", "reserve_entry", "statuses", "submit"]

START = 1_700_000_000.0
TTL_S = 30.0


class FakeClock:
    """Seconds since the epoch that only move when a test says so."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def submit(
    scheduler: Scheduler,
    jobs: Sequence[str] = ("build", "test", "deploy"),
    *,
    tenant: str = "acme",
    repo: str = "web",
    ref: str = "main",
    **context: Any,
) -> RunView:
    """Submit a run whose jobs are named ``jobs``, in that order."""
    return scheduler.submit_run(
        RunContext(tenant=tenant, repo=repo, ref=ref, **context),
        workflow_name="ci",
        jobs=[(name, {"steps": [{"run": f"make {name}"}]}) for name in jobs],
        workflow_json={"name": "ci", "env": {"CI": "true"}},
        workflow_text="name: ci\n",
        source_digest="sha256:" + "0" * 64,
    )


def statuses(view: RunView) -> dict[str, str]:
    """``{job name: status}`` of a run view."""
    return {job.name: job.status for job in view.jobs}


def lease(scheduler: Scheduler, runner_id: str = "runner-1", *, run_id: str | None = None) -> LeasedJob:
    """Lease a job, failing the test if there is none."""
    leased = scheduler.lease_next(runner_id, run_id=run_id)
    assert leased is not None, "expected a job to lease"
    return leased


def complete(
    scheduler: Scheduler, leased: LeasedJob, status: str = "success", message: str | None = None
) -> None:
    """Complete the leased job's attempt with ``status``."""
    scheduler.complete_attempt(leased.attempt_id, leased.lease_token, status=status, error_message=message)


def reserve_entry(db: Database, identity: str, *, at: datetime, **extra: Any) -> str:
    """Reserve a cache entry of tenant ``acme`` (repo ``web``, ``pip``, key ``k1`` unless ``extra``
    says otherwise) with ``identity``; return its id."""
    fields = {
        "repo": "web",
        "scope": "refs/heads/main",
        "kind": "cache",
        "name": "pip",
        "key": "k1",
        "trust_tier": "protected",
        **extra,
    }
    with db.session() as s:
        get_or_create_tenant(s, "acme")
        entry = entries.reserve(s, tenant="acme", identity=identity, at=at, **fields)
    return entry.entry_id
