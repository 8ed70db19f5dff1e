"""Submitting, reading and listing runs."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import func, select
from tests.integration.metadata.helpers import FakeClock, statuses, submit

from kiln.errors import NotFound, UsageError
from kiln.metadata.db import Database
from kiln.metadata.tables import Repository, Tenant
from kiln.scheduler import RunContext, Scheduler


def test_a_new_run_queues_its_first_job_and_holds_the_others(scheduler: Scheduler) -> None:
    view = submit(scheduler)
    assert view.status == "queued"
    assert statuses(view) == {"build": "queued", "test": "pending", "deploy": "pending"}
    assert [job.position for job in view.jobs] == [0, 1, 2]
    assert (view.tenant, view.repo, view.ref, view.workflow_name) == ("acme", "web", "main", "ci")
    assert view.trust_tier == "protected"
    assert view.started_at is None and view.finished_at is None
    assert scheduler.get_run(view.run_id) == view


@pytest.mark.parametrize(
    ("context", "tier"),
    [
        ({"ref": "feature"}, "branch"),
        ({"ref": "feature", "event": "pull_request", "base_ref": "main"}, "pull_request"),
        ({"ref": "f", "event": "pull_request", "is_fork": True, "pull_request": 3}, "fork_pull_request"),
        ({"ref": "release", "protected_refs": ("release",)}, "protected"),
    ],
)
def test_the_trust_tier_is_stored_and_handed_to_the_runner(
    scheduler: Scheduler, context: dict[str, object], tier: str
) -> None:
    view = submit(scheduler, ["only"], **context)  # type: ignore[arg-type]
    assert view.trust_tier == tier
    leased = scheduler.lease_next("r1")
    assert leased is not None and leased.trust_tier == tier and leased.context.trust_tier.value == tier


def test_a_run_of_another_tenant_is_not_found(scheduler: Scheduler) -> None:
    view = submit(scheduler, tenant="acme")
    assert scheduler.get_run(view.run_id, tenant="acme").run_id == view.run_id
    with pytest.raises(NotFound):
        scheduler.get_run(view.run_id, tenant="globex")
    with pytest.raises(NotFound):
        scheduler.get_run("01NOSUCHRUN0000000000000000")


def test_runs_are_listed_newest_first_and_by_tenant(scheduler: Scheduler, clock: FakeClock) -> None:
    first = submit(scheduler, tenant="acme")
    clock.advance(1)
    second = submit(scheduler, tenant="globex")
    clock.advance(1)
    third = submit(scheduler, tenant="acme")
    assert [r.run_id for r in scheduler.list_runs()] == [third.run_id, second.run_id, first.run_id]
    assert [r.run_id for r in scheduler.list_runs(tenant="acme")] == [third.run_id, first.run_id]
    assert [r.run_id for r in scheduler.list_runs(limit=1)] == [third.run_id]
    assert scheduler.list_runs(tenant="nobody") == []


@pytest.mark.parametrize(
    ("jobs", "message"),
    [([], "no jobs"), ([("a", {}), ("a", {})], "several jobs named a")],
)
def test_invalid_job_lists(scheduler: Scheduler, jobs: list[tuple[str, dict]], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        scheduler.submit_run(
            RunContext("t", "r", "main"),
            workflow_name="ci",
            jobs=jobs,
            workflow_json={},
            workflow_text="",
            source_digest="sha256:0",
        )


def test_tenants_and_repositories_are_created_once_under_concurrent_submits(
    database: Database, clock: FakeClock
) -> None:
    scheduler = Scheduler(database, clock=clock)
    barrier = threading.Barrier(6)
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            barrier.wait()
            submit(scheduler, ["only"], tenant="fresh-tenant", repo=f"repo-{i % 2}")
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with database.read_session() as session:
        assert session.execute(select(func.count()).select_from(Tenant)).scalar() == 1
        assert session.execute(select(func.count()).select_from(Repository)).scalar() == 2
    assert len(scheduler.list_runs(tenant="fresh-tenant")) == 6
