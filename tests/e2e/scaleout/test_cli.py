"""``kiln submit``, ``kiln cancel`` and ``kiln tokens`` against a fleet, as a user would type them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.e2e.scaleout.fleet import ADMIN, Fleet, wait_for

pytestmark = [pytest.mark.sandbox, pytest.mark.postgres]

OK = """
name: greet
jobs:
  hello:
    image: busybox
    steps:
      - run: echo "hello from $KILN_TENANT/$KILN_REPO"
  bye:
    image: busybox
    steps:
      - run: cat message.txt
"""
FAILING = """
name: broken
jobs:
  build:
    image: busybox
    steps:
      - run: echo compiling; exit 7
"""
SLOW = """
name: slow
jobs:
  wait:
    image: busybox
    steps:
      - run: echo waiting; sleep 600
"""


def kiln(fleet: Fleet, *args: str, token: str, cwd: Path | None = None, timeout: float = 120):
    env = {
        **os.environ,
        "KILN_HOME": str(fleet.tmp / "cli-home"),
        "KILN_SERVER": fleet.url,
        "KILN_TOKEN": token,
    }
    return subprocess.run(
        [sys.executable, "-m", "kiln", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _project(tmp: Path, workflow: str) -> Path:
    root = tmp / f"project-{time.monotonic_ns()}"
    root.mkdir()
    (root / "kiln.yml").write_text(workflow)
    (root / "message.txt").write_text("bye from the source snapshot\n")
    return root


def test_submit_wait_runs_on_the_fleet_and_exits_like_kiln_run(fleet: Fleet, tmp_path: Path):
    fleet.start_runner("r1")
    project = _project(tmp_path, OK)
    done = kiln(
        fleet, "submit", "--wait", "--json", "--repo", "site", token=fleet.user_tokens["acme"], cwd=project
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    # The tenant is the token's; the jobs ran on the fleet's runner.
    assert (summary["status"], summary["tenant"], summary["repo"]) == ("success", "acme", "site")
    assert [j["attempt_history"][0]["runner"] for j in summary["jobs"]] == ["r1", "r1"]
    assert "hello from acme/site" in done.stderr  # the logs, streamed while it ran
    assert "bye from the source snapshot" in done.stderr

    failed = kiln(fleet, "submit", "--wait", token=fleet.user_tokens["acme"], cwd=_project(tmp_path, FAILING))
    assert failed.returncode == 1, failed.stderr
    assert "compiling" in failed.stdout and "exit code 7" in failed.stdout

    invalid = kiln(fleet, "submit", token=fleet.user_tokens["acme"], cwd=_project(tmp_path, "jobs: [}"))
    assert invalid.returncode == 2
    assert "kiln.yml:" in invalid.stderr


def test_submit_without_wait_prints_the_run_and_returns(fleet: Fleet, tmp_path: Path):
    out = kiln(fleet, "submit", "--json", token=fleet.user_tokens["globex"], cwd=_project(tmp_path, OK))
    assert out.returncode == 0, out.stderr
    submitted = json.loads(out.stdout)
    assert (submitted["status"], submitted["tenant"]) == ("queued", "globex")
    # Another tenant's token does not see it, and cannot cancel it.
    other = kiln(fleet, "cancel", submitted["run_id"], token=fleet.user_tokens["acme"])
    assert other.returncode == 2 and "no run" in other.stderr
    bad = kiln(fleet, "submit", token="kiln_usr_made-up", cwd=_project(tmp_path, OK))
    assert bad.returncode == 2 and "token" in bad.stderr


def test_cancel_stops_the_running_sandbox_within_seconds(fleet: Fleet, tmp_path: Path):
    fleet.start_runner("r1")
    out = kiln(fleet, "submit", "--json", token=fleet.user_tokens["acme"], cwd=_project(tmp_path, SLOW))
    run_id = json.loads(out.stdout)["run_id"]
    client = fleet.user("acme")
    wait_for(
        lambda: any("waiting" in line.data for line in client.logs(run_id).lines), 60, "the step to start"
    )
    cancelled = kiln(fleet, "cancel", run_id, token=fleet.user_tokens["acme"])
    assert cancelled.returncode == 0, cancelled.stderr
    asked = time.monotonic()
    final = fleet.wait_final(run_id, timeout=30)
    stopped_after = time.monotonic() - asked
    assert final.status == "cancelled"
    step = final.jobs[0].attempts[0].steps[0]
    assert step.killed_by == "cancelled", step
    assert final.jobs[0].attempts[0].status == "cancelled"
    assert stopped_after < 20, stopped_after  # the heartbeat (every ≤3 s) carries the cancel


def test_tokens_are_created_listed_and_revoked_from_the_cli(fleet: Fleet):
    made = kiln(
        fleet, "tokens", "create", "--tenant", "acme", "--name", "deploy bot", "--scope", "read", token=ADMIN
    )
    assert made.returncode == 0, made.stderr
    secret = made.stdout.strip()
    assert secret.startswith("kiln_usr_") and "\n" not in secret
    listed = kiln(fleet, "tokens", "list", "--json", "--tenant", "acme", token=ADMIN)
    (bot,) = [t for t in json.loads(listed.stdout) if t["name"] == "deploy bot"]
    assert bot["scopes"] == ["read"] and "token" not in bot
    assert kiln(fleet, "tokens", "revoke", bot["token_id"], token=ADMIN).returncode == 0
    refused = kiln(fleet, "tenants", "list", token=secret)
    assert refused.returncode == 2 and "revoked" in refused.stderr
