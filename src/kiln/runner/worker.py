"""The runner's loop: lease a job, execute it, report, repeat.

A runner is stateless: everything it knows about a job comes with the lease, and everything it
learns goes back over HTTP. Its only local state is a cache (source archives) and scratch space,
and on start it reaps whatever a previous runner on this machine left behind when it was killed.

Faults: while the control plane (or its database) is unreachable the loop keeps trying, with
capped exponential backoff, and a job in flight is stopped by the heartbeat's watchdog before its
lease can expire (see :mod:`kiln.runner.heartbeat`), so no job runs on two runners at once. A
runner told to stop finishes its job, or gives it back (:meth:`Runner.give_back`): the control plane
queues it again at once instead of waiting for the lease to expire.
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

from kiln.api.models import LeaseOut
from kiln.errors import Forbidden, InfrastructureError, KilnError, LeaseLost, Unauthorized
from kiln.images.provider import ImageProvider
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
        max_backoff_s: float = 30.0,
    ) -> None:
        self.client = client
        self.state_dir = state_dir
        self.runner_id = runner_id or default_runner_id()
        self.run_id = run_id
        self.poll_s = poll_s
        self.max_backoff_s = max_backoff_s
        self.executor = JobExecutor(client, state_dir, echo=echo, images=ImageProvider(client, state_dir))
        self.results: list[JobResult] = []
        self._current: LeaseOut | None = None
        self._current_lock = threading.Lock()

    def prepare(self) -> None:
        """Check the sandbox works here and clean up after runners that died on this machine."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        probe(self.state_dir / "sandbox")
        for leftover in [*reap_orphans(self.state_dir / "sandbox"), *reap_job_dirs(self.state_dir)]:
            log.warning("removed leftover of a dead runner: %s", leftover)

    def run_once(self) -> bool:
        """Lease and execute one job; False when there was nothing to run.

        Raises
        ------
        InfrastructureError
            The control plane could not be reached to lease (the client retried already).
        """
        lease = self.client.lease(self.runner_id, run_id=self.run_id)
        if lease is None:
            return False
        log.info(
            "leased job %s of run %s (attempt %d)",
            lease.job_name,
            lease.run_id,
            lease.attempt_number,
            extra={"action": "job_leased", "run_id": lease.run_id, "attempt_id": lease.attempt_id},
        )
        with self._current_lock:
            self._current = lease
        try:
            result = self.executor.execute(lease)
        except KilnError as exc:
            # Completing failed (the control plane stayed away past the client's retries): the
            # lease will expire and the job be queued again; this runner moves on.
            log.error("attempt %s could not be reported: %s", lease.attempt_id, exc.message)
            result = JobResult("lost", exc.message)
        finally:
            with self._current_lock:
                self._current = None
        log.info(
            "job %s of run %s ended: %s",
            lease.job_name,
            lease.run_id,
            result.status,
            extra={"action": "job_ended", "attempt_id": lease.attempt_id, "status": result.status},
        )
        self.results.append(result)
        return True

    def run(self, stop: threading.Event, *, until: Callable[[], bool] | None = None) -> None:
        """Work until ``stop`` is set (after the current job) or ``until()`` says the work is done.

        While the control plane cannot be reached, wait and try again, backing off up to
        ``max_backoff_s``; a refused token (revoked, unknown) ends the loop with its error.
        """
        backoff = self.poll_s
        while not stop.is_set():
            try:
                worked = self.run_once()
            except (Unauthorized, Forbidden):
                raise
            except InfrastructureError as exc:
                log.warning(
                    "the control plane is unavailable (%s); trying again in %.1fs",
                    exc.message,
                    backoff,
                    extra={"action": "lease_retry", "runner_id": self.runner_id},
                )
                stop.wait(backoff)
                backoff = min(backoff * 2, self.max_backoff_s)
                continue
            backoff = self.poll_s
            if worked:
                continue
            if until is not None and until():
                return
            stop.wait(self.poll_s)

    def give_back(self, reason: str = "the runner is stopping") -> bool:
        """Give the current job back to the control plane and kill its sandbox; False if not done.

        The job is queued again at once; its attempt ends ``lost`` with its logs kept. Safe to
        call from another thread than the one running the loop.
        """
        with self._current_lock:
            lease = self._current
        if lease is None:
            return False
        try:
            self.client.release(lease.attempt_id, lease.lease_token, reason)
        except LeaseLost:
            pass  # it ended or was reclaimed meanwhile: nothing left to give back
        except KilnError as exc:
            # Killing the steps now would end the job as failed: keep running it instead.
            log.warning("could not give back attempt %s: %s", lease.attempt_id, exc.message)
            return False
        # Fenced now: stop the steps rather than let them run for nothing.
        self.executor.abort(reason)
        log.warning(
            "gave back job %s of run %s",
            lease.job_name,
            lease.run_id,
            extra={"action": "job_given_back", "attempt_id": lease.attempt_id},
        )
        return True
