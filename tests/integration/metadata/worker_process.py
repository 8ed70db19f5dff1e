"""A separate process for the concurrency tests: ``python worker_process.py MODE URL [ARGS]``.

Modes:

``migrate URL``
    Run the migrations; print the revision.
``lease-all URL RUNNER_ID``
    Lease (and complete as success) jobs until none is left; print the leased job ids as JSON.
``submit-and-lease URL RUNNER_ID COUNT``
    COUNT times: submit a one-job run, then lease and complete a job of *that* run; print the run ids
    as JSON.

Imports only ``kiln``: it runs outside pytest, like a second control plane would.
"""

from __future__ import annotations

import json
import sys

from kiln.metadata.db import Database
from kiln.scheduler import RunContext, Scheduler


def main(argv: list[str]) -> int:
    mode, url, *args = argv
    db = Database(url)
    if mode == "migrate":
        db.migrate()
        print(json.dumps(db.schema_revision()))
        return 0
    scheduler = Scheduler(db, lease_ttl_s=60)
    if mode == "lease-all":
        (runner_id,) = args
        leased = []
        while (job := scheduler.lease_next(runner_id)) is not None:
            leased.append(job.job_id)
            scheduler.complete_attempt(job.attempt_id, job.lease_token, status="success")
        print(json.dumps(leased))
        return 0
    if mode == "submit-and-lease":
        runner_id, count = args[0], int(args[1])
        runs = []
        for i in range(count):
            view = scheduler.submit_run(
                RunContext(tenant="shared", repo=f"repo-{i % 3}", ref="main"),
                workflow_name="ci",
                jobs=[("only", {})],
                workflow_json={},
                workflow_text="",
                source_digest="sha256:0",
            )
            job = scheduler.lease_next(runner_id, run_id=view.run_id)
            assert job is not None, f"run {view.run_id} had nothing to lease"
            scheduler.heartbeat(job.attempt_id, job.lease_token)
            scheduler.complete_attempt(job.attempt_id, job.lease_token, status="success")
            runs.append(view.run_id)
        print(json.dumps(runs))
        return 0
    raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
