"""Run one leased job: workspace, image, sandbox, steps in order, logs, result.

The executor reports every step to the control plane as it starts and finishes, streams output
through the :class:`LogShipper`, and completes the attempt with one of ``success`` (every step
passed), ``failed`` (a step failed: the user's code), ``cancelled``, or ``error`` (kiln could not
run the job: the sandbox, the source or the image was unavailable). A lost lease ends the job
without completing it: the attempt is no longer this runner's to complete.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from kiln.api.models import CompleteIn, LeaseOut, StepFinishIn
from kiln.errors import JobError, KilnError, LeaseLost
from kiln.images.builtin import builtin_image
from kiln.images.cancel import BuildCancel, BuildCancelled
from kiln.runner.client import ControlPlaneClient
from kiln.runner.heartbeat import Heartbeat
from kiln.runner.logship import LogShipper
from kiln.runner.masking import SecretMasker
from kiln.runner.phases import JobContext, JobPhase, default_phases
from kiln.runner.workspace import fetch_source, fresh_workspace
from kiln.sandbox import SANDBOX_HOME, WORKSPACE, JobSandbox, Limits, RootFS, StepOutcome
from kiln.spec import Job, Step

ImageProvider = Callable[[Job, LeaseOut, Callable[[str], None], BuildCancel], RootFS]
"""Turns a job's ``image:`` into the sandbox's root: ``(job, lease, log line, cancel) → RootFS``.

A custom image is built here, before the job's sandbox exists: the executor's stop sets ``cancel``
so that a cancelled run or a lost lease stops the build too."""

__all__ = ["JobExecutor", "JobResult", "job_environment"]

log = logging.getLogger(__name__)

# Every step runs under a POSIX shell that stops at the first failing command, as in most CI systems.
SHELL = ("/bin/sh", "-e", "-c")


@dataclass(frozen=True)
class JobResult:
    status: str  # success | failed | cancelled | error | lost
    error_message: str | None = None


def _format_duration(seconds: float) -> str:
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g}m"
    return f"{seconds:g}s"


def job_environment(
    lease: LeaseOut, job: Job, step: Step, rootfs: RootFS, phase_env: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The complete environment of a step; nothing of the runner's own environment leaks in.

    Later layers win: image defaults, then kiln's context variables, then what the phases add
    (``CCACHE_DIR`` of a compiler cache), then workflow, job and step ``env``, then secrets (so a
    typo'd ``env`` can never shadow a secret with a literal).
    """
    ctx = lease.context
    env: dict[str, str] = dict(rootfs.env)
    env.update(
        HOME=SANDBOX_HOME,
        USER="root",
        LOGNAME="root",
        SHELL="/bin/sh",
        CI="true",
        KILN="true",
        KILN_RUN_ID=lease.run_id,
        KILN_WORKFLOW=lease.workflow_name,
        KILN_JOB=lease.job_name,
        KILN_ATTEMPT=str(lease.attempt_number),
        KILN_TENANT=ctx.tenant,
        KILN_REPO=ctx.repo,
        KILN_REF=ctx.ref,
        KILN_EVENT=ctx.event,
        KILN_DEFAULT_BRANCH=ctx.default_branch,
        KILN_WORKSPACE=WORKSPACE,
    )
    if ctx.base_ref:
        env["KILN_BASE_REF"] = ctx.base_ref
    env.update(phase_env or {})
    env.update(lease.workflow_env)
    env.update(job.env)
    env.update(step.env)
    env.update(lease.secrets)
    return env


def _describe(outcome: StepOutcome, job_deadline_hit: bool, job: Job) -> str:
    if outcome.timed_out and job_deadline_hit:
        return f"killed: job timeout {_format_duration(job.timeout_s)}"
    if outcome.killed_by:
        return f"killed: {outcome.killed_by}"
    if outcome.exit_code is not None:
        return f"exit code {outcome.exit_code}"
    return f"killed by signal {outcome.signal}"


class JobExecutor:
    def __init__(
        self,
        client: ControlPlaneClient,
        state_dir: Path,
        *,
        echo: Callable[[str, str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        images: ImageProvider | None = None,
        phases: Callable[[], list[JobPhase]] = default_phases,
    ) -> None:
        self._client = client
        self._state_dir = state_dir
        self._images = images or (
            lambda job, _lease, _log, _cancel: builtin_image(job.image, state_dir / "images")
        )
        self._phases = phases
        self._echo = echo  # (job name, text): the local copy of the output, for `kiln runner -v`
        self._clock = clock
        self._stop_current: Callable[[str], None] | None = None  # kills the running job's sandbox

    def abort(self, reason: str) -> None:
        """Kill the running job's sandbox now (its runner gave the job back and is stopping)."""
        stop = self._stop_current
        if stop is not None:
            stop(reason)

    def execute(self, lease: LeaseOut) -> JobResult:
        masker = SecretMasker(lease.secrets.values())
        echo = (lambda text: self._echo(lease.job_name, text)) if self._echo else None
        shipper = LogShipper(
            lambda chunks: self._client.append_logs(lease.attempt_id, lease.lease_token, chunks),
            masker,
            echo=echo,
        )
        job_dir = self._state_dir / "jobs" / lease.attempt_id
        sandbox: list[JobSandbox] = []
        build = BuildCancel()

        def stop(reason: str) -> None:
            build.cancel()
            for box in sandbox:
                box.cancel()

        heartbeat = Heartbeat(
            self._client,
            lease.attempt_id,
            lease.lease_token,
            # A third of the TTL, so two beats may fail; at most 3 s, so a cancel stops the job quickly.
            interval_s=min(max(lease.lease_ttl_s / 3, 0.2), 3.0),
            lease_ttl_s=lease.lease_ttl_s,
            on_stop=stop,
        )
        self._stop_current = stop
        try:
            with heartbeat:
                result = self._run(lease, job_dir, shipper, sandbox, heartbeat, build)
        except LeaseLost:
            result = JobResult("lost", "the lease was lost; another runner owns this job now")
        except KilnError as exc:
            shipper.line(f"kiln: error: {exc.message}")
            result = JobResult("error", masker.mask(exc.message))
        finally:
            self._stop_current = None
            shipper.close()
            shutil.rmtree(job_dir, ignore_errors=True)
        if heartbeat.lease_lost:
            result = JobResult("lost", "the lease was lost; another runner owns this job now")
        if result.status != "lost":
            try:
                self._client.complete(
                    lease.attempt_id,
                    lease.lease_token,
                    CompleteIn(status=result.status, error_message=result.error_message),  # type: ignore[arg-type]
                )
            except LeaseLost:
                result = JobResult("lost", "the lease was lost before the job could be completed")
        return result

    def _run(
        self,
        lease: LeaseOut,
        job_dir: Path,
        shipper: LogShipper,
        sandbox: list[JobSandbox],
        heartbeat: Heartbeat,
        build: BuildCancel,
    ) -> JobResult:
        if lease.secrets_lost:
            raise JobError(
                "the run's secrets were held by a control plane that has restarted since; "
                "submit the run again"
            )
        job = Job.model_validate(lease.spec)
        started = self._clock()
        deadline = started + job.timeout_s
        workspace = job_dir / "workspace"
        job_dir.mkdir(parents=True, exist_ok=True)
        (job_dir / "owner.pid").write_text(str(os.getpid()))

        archive = fetch_source(
            self._client, lease.source_digest, self._state_dir / "sources", lease.lease_token
        )
        fresh_workspace(archive, workspace)
        try:
            rootfs = self._images(job, lease, shipper.line, build)
        except BuildCancelled:
            if heartbeat.lease_lost:
                raise LeaseLost() from None
            if heartbeat.cancel_requested:
                shipper.line("kiln: the run was cancelled while the job's image was being built")
                return JobResult("cancelled", "the run was cancelled")
            raise
        self._client.report_image(lease.attempt_id, lease.lease_token, rootfs.name, rootfs.digest)
        limits = Limits(memory_bytes=job.limits.memory_bytes, pids=job.limits.pids, cpus=job.limits.cpus)
        shipper.line(
            f"kiln: job {lease.job_name} (attempt {lease.attempt_number}) "
            f"on image {rootfs.name} {rootfs.digest[:19]}"
        )

        failed: str | None = None
        with JobSandbox(
            rootfs, workspace, state_dir=self._state_dir / "sandbox", name=lease.attempt_id, limits=limits
        ) as box:
            sandbox.append(box)
            ctx = JobContext(
                lease=lease,
                job=job,
                client=self._client,
                rootfs=rootfs,
                sandbox=box,
                workspace=workspace,
                spool_dir=self._state_dir / "spool",
                log=shipper.line,
                secrets=lease.secrets,
            )
            entered: list[JobPhase] = []
            try:
                for phase in self._phases():
                    phase.before_steps(ctx)
                    entered.append(phase)
            except JobError as exc:
                # A required input (an artifact) is missing: the steps cannot run.
                shipper.line(f"kiln: {exc.message}")
                failed = exc.message
            for index, step in enumerate(job.steps):
                if failed is not None or heartbeat.cancel_requested or heartbeat.lease_lost:
                    self._client.step_finished(
                        lease.attempt_id, lease.lease_token, index, StepFinishIn(status="skipped")
                    )
                    continue
                outcome, summary = self._run_step(
                    lease, job, step, index, box, rootfs, shipper, deadline, ctx.env
                )
                if not outcome.ok:
                    failed = f"step {step.name!r} failed: {summary}"
            if not (heartbeat.lease_lost or heartbeat.cancel_requested):
                for phase in reversed(entered):
                    try:
                        phase.after_steps(ctx, succeeded=failed is None)
                    except JobError as exc:
                        # A required output (an artifact) could not be made: the job failed.
                        shipper.line(f"kiln: {exc.message}")
                        failed = failed or exc.message
        if heartbeat.lease_lost:
            raise LeaseLost()
        if heartbeat.cancel_requested:
            return JobResult("cancelled", "the run was cancelled")
        return JobResult("failed", failed) if failed else JobResult("success")

    def _run_step(
        self,
        lease: LeaseOut,
        job: Job,
        step: Step,
        index: int,
        box: JobSandbox,
        rootfs: RootFS,
        shipper: LogShipper,
        deadline: float,
        phase_env: Mapping[str, str],
    ) -> tuple[StepOutcome, str]:
        self._client.step_started(lease.attempt_id, lease.lease_token, index, step.name)
        shipper.set_step(index)
        shipper.line(f"kiln: step {index + 1}/{len(job.steps)}: {step.name}")
        remaining = max(deadline - self._clock(), 0.0)
        step_timeout = min(step.timeout_s, remaining) if step.timeout_s is not None else remaining
        job_deadline_hit = step.timeout_s is None or remaining < step.timeout_s
        network = job.network if step.network is None else step.network
        outcome = box.run(
            [*SHELL, step.run],
            env=job_environment(lease, job, step, rootfs, phase_env),
            network=network,
            timeout_s=step_timeout,
            output=shipper.write,
        )
        summary = _describe(outcome, job_deadline_hit, job)
        if outcome.timed_out and not job_deadline_hit and step.timeout_s is not None:
            summary = f"killed: step timeout {_format_duration(step.timeout_s)}"
        verdict = "succeeded" if outcome.ok else "failed"
        shipper.line(f"kiln: step {step.name!r} {verdict} ({summary}, {outcome.duration_s:.2f}s)")
        shipper.set_step(None)
        self._client.step_finished(
            lease.attempt_id,
            lease.lease_token,
            index,
            StepFinishIn(
                status="success" if outcome.ok else "failed",
                exit_code=outcome.exit_code,
                signal=outcome.signal,
                killed_by=summary.removeprefix("killed: ") if summary.startswith("killed") else None,
                duration_s=outcome.duration_s,
            ),
        )
        return outcome, summary
