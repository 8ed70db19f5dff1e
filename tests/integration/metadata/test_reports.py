"""Per-attempt reports: what a runner's phases did (caches, artifacts, image), kept for the summary."""

from __future__ import annotations

import pytest
from tests.integration.metadata.helpers import lease, submit

from kiln.errors import LeaseLost
from kiln.scheduler import Scheduler


def test_sections_are_kept_per_attempt_and_replaced_whole(scheduler: Scheduler) -> None:
    run = submit(scheduler, ["build"])
    job = lease(scheduler)
    scheduler.report(job.attempt_id, job.lease_token, "caches", [{"name": "pip", "restore": "miss"}])
    scheduler.report(job.attempt_id, job.lease_token, "caches", [{"name": "pip", "restore": "hit"}])
    scheduler.report(job.attempt_id, job.lease_token, "image", {"layers_built": 2})
    attempt = scheduler.get_run(run.run_id).jobs[0].attempts[0]
    assert attempt.report == {"caches": [{"name": "pip", "restore": "hit"}], "image": {"layers_built": 2}}


def test_only_the_lease_holder_may_report(scheduler: Scheduler) -> None:
    submit(scheduler, ["build"])
    job = lease(scheduler)
    with pytest.raises(LeaseLost):
        scheduler.report(job.attempt_id, "not-the-token", "artifacts", [])
