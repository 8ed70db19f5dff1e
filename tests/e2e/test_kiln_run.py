"""``kiln run`` end to end: real sandbox, real SQLite, real HTTP between runner and control plane."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest
from sqlalchemy import text

from kiln.metadata.db import Database

pytestmark = pytest.mark.sandbox

# Root without capabilities: cannot mount or unshare, yet can still read the checkout and the venv
# wherever they live (a uid switch would fail on a private checkout instead of on the sandbox).
UNPRIVILEGED = ["setpriv", "--inh-caps=-all", "--bounding-set=-all"]
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_hello_example_succeeds_with_a_complete_summary(kiln):
    result = kiln("run", "--json", str(EXAMPLES / "hello.yml"))
    assert result.code == 0, result.stderr
    summary = result.summary
    assert summary["status"] == "success"
    assert [job["status"] for job in summary["jobs"]] == ["success"] * len(summary["jobs"])
    for job in summary["jobs"]:
        assert job["attempts"] == 1
        assert job["image"]["name"] == "busybox"
        assert job["image"]["digest"].startswith("sha256:")
        assert job["duration_s"] > 0
        assert job["caches"] == [] and job["artifacts"] == []
        assert all(step["status"] == "success" and step["exit_code"] == 0 for step in job["steps"])


def test_jobs_run_in_file_order_and_a_failure_skips_the_rest(kiln, project):
    workflow = project(
        """
name: order
jobs:
  first:
    image: busybox
    steps:
      - run: echo one
  second:
    image: busybox
    steps:
      - run: echo two; exit 7
      - name: never
        run: echo unreachable
  third:
    image: busybox
    steps:
      - run: echo three
"""
    )
    result = kiln("run", "--json", str(workflow))
    assert result.code == 1
    jobs = {job["name"]: job for job in result.summary["jobs"]}
    assert [job["name"] for job in result.summary["jobs"]] == ["first", "second", "third"]
    assert jobs["first"]["status"] == "success"
    assert jobs["second"]["status"] == "failed"
    assert [s["status"] for s in jobs["second"]["steps"]] == ["failed", "skipped"]
    assert jobs["second"]["steps"][0]["exit_code"] == 7
    assert jobs["third"]["status"] == "skipped"
    assert result.summary["status"] == "failed"


def test_live_output_is_prefixed_by_job(kiln, project):
    workflow = project(
        "name: p\njobs:\n  greet:\n    image: busybox\n    steps:\n      - run: echo hello-from-the-sandbox\n"
    )
    result = kiln("run", str(workflow))
    assert result.code == 0, result.stderr
    assert any(
        line.startswith("greet") and "hello-from-the-sandbox" in line for line in result.stdout.splitlines()
    ), result.stdout


def test_invalid_workflow_exits_2_with_file_line_and_column(kiln, project):
    workflow = project("name: bad\njobs:\n  a:\n    stpes:\n      - run: true\n")
    result = kiln("run", str(workflow))
    assert result.code == 2
    assert f"{workflow}:4:5:" in result.stderr
    assert "steps" in result.stderr


def test_secrets_reach_steps_and_are_masked_in_output_and_stored_logs(kiln, project, kiln_home):
    workflow = project(
        """
name: secrets
jobs:
  leak:
    image: busybox
    steps:
      - run: 'echo "token is $API_TOKEN"; test "${#API_TOKEN}" = 18'
"""
    )
    result = kiln("run", "--json", "--secret", "API_TOKEN=sup3r-s3cret-value", str(workflow))
    assert result.code == 0, result.stderr
    assert "sup3r-s3cret-value" not in result.stdout + result.stderr
    assert "token is ***" in result.stderr
    db = sqlite3.connect(kiln_home / "kiln.db")
    stored = "".join(row[0] for row in db.execute("SELECT data FROM log_chunks"))
    assert "token is ***" in stored
    assert "sup3r-s3cret-value" not in stored
    # Nor anywhere else in the database: secrets are held in memory only.
    dump = "\n".join(db.iterdump())
    assert "sup3r-s3cret-value" not in dump


def test_host_environment_does_not_leak_into_steps(kiln, project):
    workflow = project(
        """
name: env
env: {FROM_WORKFLOW: w}
jobs:
  show:
    image: busybox
    env: {FROM_JOB: j}
    steps:
      - run: env | sort
        env: {FROM_STEP: s}
"""
    )
    result = kiln("run", "--json", str(workflow), env={"LEAKY_HOST_VARIABLE": "oops"})
    assert result.code == 0, result.stderr
    assert "LEAKY_HOST_VARIABLE" not in result.stderr
    for expected in (
        "FROM_WORKFLOW=w",
        "FROM_JOB=j",
        "FROM_STEP=s",
        "CI=true",
        "KILN_JOB=show",
        "HOME=/root",
    ):
        assert expected in result.stderr


def test_step_timeout_kills_the_step_and_says_so(kiln, project):
    workflow = project(
        "name: t\njobs:\n  slow:\n    image: busybox\n    steps:\n"
        "      - run: sleep 600\n        timeout: 2s\n"
    )
    result = kiln("run", "--json", str(workflow), timeout=60)
    assert result.code == 1
    step = result.summary["jobs"][0]["steps"][0]
    assert step["status"] == "failed"
    assert "timeout" in step["killed_by"]
    assert step["duration_s"] < 20


def test_two_runs_sharing_one_kiln_home_both_succeed(kiln, project):
    workflow = project(
        "name: c\njobs:\n  a:\n    image: busybox\n    steps:\n      - run: sleep 1; echo a\n"
        "  b:\n    image: busybox\n    steps:\n      - run: echo b\n"
    )
    results = []

    def go() -> None:
        results.append(kiln("run", "--json", str(workflow)))

    threads = [threading.Thread(target=go) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.code for r in results] == [0, 0], [r.stderr for r in results]
    assert results[0].summary["run_id"] != results[1].summary["run_id"]


def test_without_root_the_run_stops_with_exit_3_naming_the_problem():
    # A real missing privilege: without capabilities the same command cannot unshare a mount
    # namespace or mount an overlay, and kiln must say so instead of running the job unsandboxed.
    with tempfile.TemporaryDirectory(prefix="kiln-unpriv-") as tmp:
        root = Path(tmp)
        root.chmod(0o777)
        (root / "kiln.yml").write_text(
            "name: u\njobs:\n  a:\n    image: busybox\n    steps:\n      - run: 'true'\n"
        )
        proc = subprocess.run(
            [*UNPRIVILEGED, sys.executable, "-m", "kiln", "run", str(root / "kiln.yml")],
            env={"KILN_HOME": str(root / "home"), "PATH": "/usr/bin:/bin", "HOME": str(root)},
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "the sandbox cannot start" in proc.stderr
    assert "mount namespaces" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_kiln_run_keeps_its_metadata_in_postgresql_when_told(kiln, postgres_database_url):
    result = kiln(
        "run", "--json", str(EXAMPLES / "hello.yml"), env={"KILN_DATABASE_URL": postgres_database_url}
    )
    assert result.code == 0, result.stderr
    with Database(postgres_database_url).read_session() as session:
        stored = session.execute(
            text("SELECT status FROM runs WHERE id = :id"), {"id": result.summary["run_id"]}
        )
        assert stored.scalar_one() == "success"
