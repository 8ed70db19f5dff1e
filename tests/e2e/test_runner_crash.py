"""A runner SIGKILLed mid-job: the lease expires, another runner re-runs the job, the run completes.

Real processes throughout: ``kiln server`` on SQLite, two ``kiln runner`` processes, and SIGKILL.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from kiln.api.models import RunContextIn, SubmitIn
from kiln.runner import ControlPlaneClient
from kiln.source import snapshot_source

pytestmark = pytest.mark.sandbox

# Attempt 1 hangs (so it can be killed mid-job); any later attempt finishes.
WORKFLOW = """
name: crash
jobs:
  prepare:
    image: busybox
    steps:
      - run: echo prepared
  flaky:
    image: busybox
    steps:
      - run: 'if [ "$KILN_ATTEMPT" = 1 ]; then echo started-first-attempt; sleep 600; fi; echo finished'
"""


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sleepers() -> list[int]:
    out = subprocess.run(["pgrep", "-f", "sleep 600"], capture_output=True, text=True).stdout
    return [int(pid) for pid in out.split()]


def test_killed_runner_loses_its_lease_and_another_runner_finishes_the_job(tmp_path: Path):
    home = tmp_path / "home"
    env = {**os.environ, "KILN_HOME": str(home)}
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kiln",
            "server",
            "--listen",
            f"127.0.0.1:{port}",
            "--token",
            "t0k",
            "--lease-ttl",
            "2",
        ],
        env=env,
    )
    runners: list[subprocess.Popen] = []
    try:
        _wait(lambda: _ready(url), 20, "the server")
        client = ControlPlaneClient(url, "t0k")
        source = tmp_path / "src"
        source.mkdir()
        (source / "kiln.yml").write_text(WORKFLOW)
        snap = snapshot_source(source, tmp_path / "spool")
        client.upload_source(snap.info.digest, snap.archive)
        run = client.submit(
            SubmitIn(
                context=RunContextIn(repo="crash"), workflow_text=WORKFLOW, source_digest=snap.info.digest
            )
        )

        def start_runner(name: str) -> subprocess.Popen:
            proc = subprocess.Popen(
                [sys.executable, "-m", "kiln", "runner", "--server", url, "--token", "t0k", "--name", name],
                env={**env, "KILN_HOME": str(tmp_path / name)},
            )
            runners.append(proc)
            return proc

        first = start_runner("runner-a")
        _wait(
            lambda: any(
                line.job == "flaky" and "started-first-attempt" in line.data
                for line in client.logs(run.run_id).lines
            ),
            60,
            "the first attempt to start",
        )
        first.send_signal(signal.SIGKILL)
        first.wait()
        # die-with-parent: the sandboxed step does not outlive its runner.
        _wait(lambda: not _sleepers(), 10, "the orphaned step to die")

        start_runner("runner-b")
        final = _wait(
            lambda: (r := client.get_run(run.run_id)).status in {"success", "failed", "error"} and r,
            90,
            "the run",
        )
        assert final.status == "success"
        flaky = next(job for job in final.jobs if job.name == "flaky")
        assert [a.status for a in flaky.attempts] == ["lost", "success"]
        assert flaky.attempts[0].runner_id == "runner-a"
        assert flaky.attempts[1].runner_id == "runner-b"
        # The lost attempt's logs are kept.
        lines = client.logs(run.run_id).lines
        assert any(line.attempt_number == 1 and "started-first-attempt" in line.data for line in lines)
        assert any(line.attempt_number == 2 and "finished" in line.data for line in lines)
    finally:
        for proc in [*runners, server]:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
