"""The runner's loop: lease a job, execute it, report, repeat.

A runner is stateless: everything it knows about a job comes with the lease, and everything it
learns goes back over HTTP. Its only local state is a cache (source archives) and scratch space,
and on start it reaps whatever a previous runner on this machine left behind when it was killed.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import threading
import uuid
from collections.abc import Callable
from pathlib import Path

from kiln.runner.client import ControlPlaneClient
from kiln.runner.executor import JobExecutor, JobResult
from kiln.sandbox import probe, reap_orphans

__all__ = ["Runner", "default_runner_id", "reap_job_dirs"]

log = logging.getLogger(__name__)


def default_runner_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reap_job_dirs(state_dir: Path) -> list[str]:
    """Remove job folders whose owning runner process is gone."""
    removed = []
    for job_dir in sorted((state_dir / "jobs").glob("*")):
        try:
            owner = int((job_dir / "owner.pid").read_text())
        except (OSError, ValueError):
            owner = 0
        if owner == os.getpid() or (owner and _pid_alive(owner)):
            continue
        shutil.rmtree(job_dir, ignore_errors=True)
        removed.append(str(job_dir))
    return removed


class Runner:
    def __init__(
        self,
        client: ControlPlaneClient,
        state_dir: Path,
        *,
        runner_id: str | None = None,
        run_id: str | None = None,
        poll_s: float = 0.5,
        echo: Callable[[str, str], None] | None = None,
    ) -> None:
        self.client = client
        self.state_dir = state_dir
        self.runner_id = runner_id or default_runner_id()
        self.run_id = run_id
        self.poll_s = poll_s
        self.executor = JobExecutor(client, state_dir, echo=echo)
        self.results: list[JobResult] = []

    def prepare(self) -> None:
        """Check the sandbox works here and clean up after runners that died on this machine."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        probe(self.state_dir / "sandbox")
        for leftover in [*reap_orphans(self.state_dir / "sandbox"), *reap_job_dirs(self.state_dir)]:
            log.warning("removed leftover of a dead runner: %s", leftover)

    def run_once(self) -> bool:
        """Lease and execute one job; False when there was nothing to run."""
        lease = self.client.lease(self.runner_id, run_id=self.run_id)
        if lease is None:
            return False
        log.info("leased job %s of run %s (attempt %d)", lease.job_name, lease.run_id, lease.attempt_number)
        self.results.append(self.executor.execute(lease))
        return True

    def run(self, stop: threading.Event, *, until: Callable[[], bool] | None = None) -> None:
        """Work until ``stop`` is set (after the current job) or ``until()`` says the work is done."""
        while not stop.is_set():
            if self.run_once():
                continue
            if until is not None and until():
                return
            stop.wait(self.poll_s)
