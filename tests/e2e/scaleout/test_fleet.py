"""Two, then eight runner processes against one server on PostgreSQL, with runs of three tenants.

Every job runs exactly once (one attempt, one line of output), the jobs of a run in file order,
several runs in flight at once on different runners.
"""

from __future__ import annotations

import itertools

import pytest
from tests.e2e.scaleout.fleet import Fleet, wait_for

from kiln.api.models import RunOut

pytestmark = [pytest.mark.sandbox, pytest.mark.postgres]

JOBS = ("one", "two", "three")
WORKFLOW = "name: trivial\njobs:\n" + "".join(
    f'  {job}:\n    image: busybox\n    steps:\n      - run: echo "ran $KILN_RUN_ID/$KILN_JOB"\n'
    for job in JOBS
)


def _submit_batch(fleet: Fleet, runs_per_tenant: int) -> list[RunOut]:
    return [
        fleet.submit(tenant, WORKFLOW, repo=f"repo-{i}")
        for i, tenant in itertools.product(range(runs_per_tenant), fleet.tenants)
    ]


def _check_batch(fleet: Fleet, submitted: list[RunOut]) -> set[str]:
    """Assert the batch ran right; return the runners that ran its jobs."""
    finals = [fleet.wait_final(run.run_id, timeout=240) for run in submitted]
    runners: set[str] = set()
    windows = []
    for run in finals:
        assert run.status == "success", run
        assert [job.name for job in run.jobs] == list(JOBS)
        for earlier, later in itertools.pairwise(run.jobs):
            # In order: a job starts only after the one before it finished.
            assert later.attempts[0].started_at >= earlier.attempts[0].finished_at, (earlier, later)
        for job in run.jobs:
            assert [a.status for a in job.attempts] == ["success"], job  # exactly once
            runners.add(job.attempts[0].runner_id)
            windows.append((job.attempts[0].started_at, job.attempts[0].finished_at))
        tenant_client = fleet.user(run.tenant)
        output = "".join(line.data for line in tenant_client.logs(run.run_id).lines)
        for job in JOBS:
            assert output.count(f"ran {run.run_id}/{job}\n") == 1, output
    # Several runs were in flight together: some jobs (of different runs) overlapped in time.
    overlapping = any(a[0] < b[1] and b[0] < a[1] for a, b in itertools.combinations(windows, 2))
    assert overlapping, "no two jobs ever ran at the same time"
    return runners


def test_every_job_runs_once_in_order_with_two_then_eight_runners(fleet: Fleet):
    for name in ("r1", "r2"):
        fleet.start_runner(name)
    first = _submit_batch(fleet, runs_per_tenant=2)
    ran_on = _check_batch(fleet, first)
    assert ran_on == {"r1", "r2"}

    for name in ("r3", "r4", "r5", "r6", "r7", "r8"):
        fleet.start_runner(name)
    wait_for(
        lambda: len(fleet.admin.list_tokens(revoked=False)) >= 3 + 1 + 8, 60, "eight runners to register"
    )
    second = _submit_batch(fleet, runs_per_tenant=3)
    ran_on = _check_batch(fleet, second)
    assert len(ran_on) >= 3, ran_on

    # Each tenant sees exactly its own runs.
    for tenant in fleet.tenants:
        seen = {r.run_id for r in fleet.user(tenant).list_runs(limit=100)}
        assert seen == {r.run_id for r in first + second if r.tenant == tenant}
    assert all(proc.poll() is None for proc in fleet.runners.values()), "a runner died"
