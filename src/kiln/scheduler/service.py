"""The scheduler: runs, jobs in file order, attempts, leases, steps and logs.

It decides *which* state changes happen, using the state tables (``job_states``, ``attempt_states``,
``run_states``, ``step_states``), the retry policy and the outcome order; ``kiln.metadata`` makes
each change one guarded statement with its history row. Each public method is one transaction.

Sequential jobs: a run's jobs execute one after another in file order. When a job succeeds the next
one is queued; when one fails, errors or is cancelled, every later job is skipped; when all are
final the run takes the worst outcome. :meth:`Scheduler._advance` is that rule, applied after
every change of a job.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from kiln.errors import IllegalTransition, LeaseLost, NotFound, UsageError
from kiln.metadata import attempts as attempts_sql
from kiln.metadata import auth as auth_sql
from kiln.metadata import jobs as jobs_sql
from kiln.metadata import leases as leases_sql
from kiln.metadata import logs as logs_sql
from kiln.metadata import runs as runs_sql
from kiln.metadata.db import Database
from kiln.metadata.ids import new_id
from kiln.metadata.records import AttemptRecord, JobRecord, LogChunk, NewJob, NewRun, RunRecord
from kiln.scheduler import attempt_states, job_states, run_states, step_states
from kiln.scheduler.attempt_states import AttemptEvent, AttemptState
from kiln.scheduler.context import RunContext
from kiln.scheduler.job_states import JobEvent, JobState
from kiln.scheduler.outcomes import JobOutcome, combine, run_event_for
from kiln.scheduler.retry import RetryPolicy
from kiln.scheduler.run_states import RunEvent, RunState
from kiln.scheduler.step_states import StepEvent, StepState
from kiln.scheduler.views import (
    Heartbeat,
    LeasedJob,
    LogCursor,
    LogLine,
    LogPage,
    ReclaimedAttempt,
    RunSummary,
    RunView,
    build_run_view,
    run_context_of,
    run_summary_of,
)

__all__ = ["JOB_TOKEN_PREFIX", "Scheduler"]

logger = logging.getLogger(__name__)

# A completed attempt's state → the job event it causes.
_JOB_EVENT_FOR_ATTEMPT = {
    AttemptState.SUCCESS: JobEvent.SUCCEEDED,
    AttemptState.FAILED: JobEvent.FAILED,
    AttemptState.ERROR: JobEvent.ERRORED,
    AttemptState.CANCELLED: JobEvent.CANCELLED,
}
_MAX_LOG_CHUNKS_PER_CALL = 10_000
# Job tokens (lease tokens) start with this, so a leaked one is recognisable and the API can tell
# it from a user's token without a lookup.
JOB_TOKEN_PREFIX = "kiln_job_"
_MAX_LOG_PAGE = 10_000


class Scheduler:
    """Runs, jobs, attempts and leases over a metadata database.

    Parameters
    ----------
    db
        The (migrated) metadata database.
    clock
        Seconds since the epoch; every timestamp and lease expiry comes from it, so tests can move
        time.
    lease_ttl_s
        How long a lease lasts without a heartbeat. Runners should heartbeat several times per TTL.
    max_attempts
        Attempts per job (stored with each job when it is submitted); see :class:`RetryPolicy`.

    Raises
    ------
    UsageError
        A non-positive TTL or fewer than one attempt.
    """

    def __init__(
        self,
        db: Database,
        *,
        clock: Callable[[], float] = time.time,
        lease_ttl_s: float = 30.0,
        max_attempts: int = 3,
    ) -> None:
        if lease_ttl_s <= 0:
            raise UsageError(f"lease_ttl_s must be positive, not {lease_ttl_s}")
        self._db = db
        self._clock = clock
        self._lease_ttl = timedelta(seconds=lease_ttl_s)
        self._retry = RetryPolicy(max_attempts=max_attempts)

    @property
    def db(self) -> Database:
        """The metadata database (the blob endpoints record upload sessions in it)."""
        return self._db

    @property
    def lease_ttl_s(self) -> float:
        """How long a lease lasts without a heartbeat, in seconds."""
        return self._lease_ttl.total_seconds()

    @property
    def retry_policy(self) -> RetryPolicy:
        """The policy that decides whether a lost attempt's job is queued again."""
        return self._retry

    def now(self) -> datetime:
        """The scheduler's time (from its clock): what lease expiries are compared with."""
        return datetime.fromtimestamp(self._clock(), tz=UTC)

    _now = now

    # -- submitting and reading runs --------------------------------------------------------------

    def submit_run(
        self,
        ctx: RunContext,
        *,
        workflow_name: str,
        jobs: Sequence[tuple[str, dict[str, Any]]],
        workflow_json: dict[str, Any],
        workflow_text: str,
        source_digest: str,
        submitted_by: str | None = None,
    ) -> RunView:
        """Store a new run with its jobs; the first job is queued, the others wait.

        The tenant and repository are created on first use.

        Parameters
        ----------
        ctx
            Tenant, repository, ref and event; the trust tier is derived from it and stored.
        workflow_name
            The workflow's name.
        jobs
            ``(name, job spec as JSON)`` in file order; names are unique.
        workflow_json, workflow_text
            The validated workflow as JSON (its ``env`` is handed to runners) and the file as written.
        source_digest
            The source snapshot's digest, e.g. ``sha256:…``.
        submitted_by
            Who submitted it, for the record.

        Returns
        -------
        RunView
            The new run, ``queued``.

        Raises
        ------
        UsageError
            No jobs, or two jobs with one name.
        DatabaseUnavailable
            The database cannot be reached.
        """
        if not jobs:
            raise UsageError(f"workflow {workflow_name!r} has no jobs")
        names = [name for name, _ in jobs]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise UsageError(f"workflow {workflow_name!r} has several jobs named {', '.join(duplicates)}")
        now = self._now()
        run_id = new_id(now)
        tier = ctx.trust_tier
        with self._db.session() as session:
            tenant_id = runs_sql.get_or_create_tenant(session, ctx.tenant)
            repository_id = runs_sql.get_or_create_repository(session, tenant_id, ctx.repo)
            # The tenant's users may fetch the source of their own runs from now on.
            auth_sql.record_source(session, tenant_id, source_digest, at=now)
            runs_sql.insert_run(
                session,
                NewRun(
                    run_id=run_id,
                    tenant_id=tenant_id,
                    repository_id=repository_id,
                    workflow_name=workflow_name,
                    workflow_json=workflow_json,
                    workflow_text=workflow_text,
                    source_digest=source_digest,
                    ref=ctx.ref,
                    default_branch=ctx.default_branch,
                    event=ctx.event,
                    base_ref=ctx.base_ref,
                    is_fork=ctx.is_fork,
                    pull_request=ctx.pull_request,
                    protected_refs=ctx.protected_refs,
                    trust_tier=tier.value,
                    status=RunState.QUEUED,
                    submitted_by=submitted_by,
                    created_at=now,
                ),
            )
            jobs_sql.insert_jobs(
                session,
                run_id,
                [
                    NewJob(
                        job_id=new_id(now),
                        position=position,
                        name=name,
                        spec=spec,
                        status=JobState.PENDING,
                        max_attempts=self._retry.max_attempts,
                    )
                    for position, (name, spec) in enumerate(jobs)
                ],
                at=now,
            )
            run = self._locked_run(session, run_id)
            self._advance(session, run, now)  # the first job is runnable at once
            view = self._view(session, run_id)
        logger.info(
            "Run %s submitted with %d jobs.",
            run_id,
            len(jobs),
            extra={
                "action": "run_submitted",
                "run_id": run_id,
                "tenant": ctx.tenant,
                "trust_tier": tier.value,
            },
        )
        return view

    def get_run(self, run_id: str, *, tenant: str | None = None) -> RunView:
        """Return a run with its jobs, attempts and steps.

        Parameters
        ----------
        run_id
            The run.
        tenant
            When given, a run of another tenant is not found.

        Raises
        ------
        NotFound
            No such run (for this tenant).
        """
        with self._db.read_session() as session:
            return self._view(session, run_id, tenant=tenant)

    def list_runs(self, *, tenant: str | None = None, limit: int = 50) -> list[RunSummary]:
        """Return the newest runs first.

        Parameters
        ----------
        tenant
            Only this tenant's runs, when given.
        limit
            At most this many (1 to 1000).
        """
        limit = max(1, min(limit, 1000))
        with self._db.read_session() as session:
            return [run_summary_of(r) for r in runs_sql.list_runs(session, tenant=tenant, limit=limit)]

    def get_logs(
        self,
        run_id: str,
        *,
        job: str | None = None,
        after: LogCursor | int | None = None,
        limit: int = 1000,
        tenant: str | None = None,
    ) -> LogPage:
        """Return the run's log lines after ``after``, oldest first.

        To tail a run, call again with the returned cursor until ``at_end``.

        Parameters
        ----------
        run_id
            The run.
        job
            Only this job's lines, when given.
        after
            A cursor from an earlier page (or a line's ``cursor``); from the start when ``None``.
        limit
            At most this many lines (1 to 10000).
        tenant
            When given, a run of another tenant is not found.

        Raises
        ------
        NotFound
            No such run (for this tenant), or no such job in it.
        """
        limit = max(1, min(limit, _MAX_LOG_PAGE))
        start = LogCursor(int(after or 0))
        with self._db.read_session() as session:
            # Read the status first: if the run was final then, every chunk it will ever have is
            # already committed (attempts end before their run does) and the page below sees it.
            run = runs_sql.get_run(session, run_id, tenant=tenant)
            if run is None:
                raise NotFound(f"no run {run_id}")
            if job is not None and job not in {j.name for j in jobs_sql.list_jobs(session, run_id)}:
                raise NotFound(f"run {run_id} has no job {job!r}")
            records = logs_sql.read_logs(session, run_id, after_id=start, job_name=job, limit=limit)
        lines = tuple(
            LogLine(
                job=r.job_name,
                attempt_number=r.attempt_number,
                step_index=r.step_index,
                seq=r.seq,
                data=r.data,
                cursor=LogCursor(r.log_id),
            )
            for r in records
        )
        return LogPage(
            lines=lines,
            cursor=lines[-1].cursor if lines else start,
            at_end=RunState(run.status) in run_states.FINAL_STATES and len(lines) < limit,
        )

    def cancel_run(self, run_id: str, *, tenant: str | None = None) -> RunView:
        """Cancel a run: waiting jobs are cancelled now, a running job when its runner stops.

        The running job's runner sees ``cancel_requested`` in its next heartbeat and completes its
        attempt as ``cancelled``; should it vanish instead, the janitor cancels the job when it
        reclaims the lease. Cancelling a finished run changes nothing.

        Parameters
        ----------
        tenant
            When given, a run of another tenant is not found.

        Raises
        ------
        NotFound
            No such run (for this tenant).
        """
        now = self._now()
        with self._db.session() as session:
            if tenant is not None and runs_sql.get_run(session, run_id, tenant=tenant) is None:
                raise NotFound(f"no run {run_id} for tenant {tenant!r}")
            run = self._locked_run(session, run_id)
            if RunState(run.status) not in run_states.FINAL_STATES:
                runs_sql.request_cancel(session, run_id)
                for job in jobs_sql.list_jobs(session, run_id):
                    state = JobState(job.status)
                    if state in (JobState.PENDING, JobState.QUEUED):
                        self._move_job(
                            session, job, JobEvent.CANCELLED, now, error_message="the run was cancelled"
                        )
                self._advance(session, self._locked_run(session, run_id), now)
                logger.info("Run %s cancelled.", run_id, extra={"action": "run_cancelled", "run_id": run_id})
            return self._view(session, run_id)

    # -- the runner's side: lease, heartbeat, report, complete ------------------------------------

    def lease_next(
        self, runner_id: str, *, run_id: str | None = None, tenant: str | None = None
    ) -> LeasedJob | None:
        """Lease the oldest queued job to ``runner_id``, creating its attempt with a fresh token.

        The token is the job token: the runner's credential for everything it does for this
        attempt, valid while the attempt runs and its lease has not expired. Only its digest is
        stored.

        Jobs of runs being cancelled are never leased. Expired leases are *not* reclaimed here:
        that is :meth:`reclaim_expired_leases`' job.

        Parameters
        ----------
        runner_id
            Who asks.
        run_id
            Only this run's jobs (the embedded runner of ``kiln run`` leases its own run only).
        tenant
            Only this tenant's jobs (a runner registered for one tenant).

        Returns
        -------
        LeasedJob | None
            The job and its lease, or ``None`` when nothing is runnable.
        """
        if not runner_id:
            raise UsageError("a runner needs an id to lease jobs")
        now = self._now()
        token = JOB_TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self._db.session() as session:
            lease = leases_sql.lease_next_job(
                session,
                runner_id=runner_id,
                attempt_id=new_id(now),
                lease_token=token,
                at=now,
                expires_at=now + self._lease_ttl,
                queued=JobState.QUEUED,
                running=job_states.next_state(JobState.QUEUED, JobEvent.LEASED),
                attempt_running=AttemptState.RUNNING,
                run_id=run_id,
                tenant=tenant,
            )
            if lease is None:
                leases_sql.touch_runner(session, runner_id, at=now)
                return None
            run = self._run(session, lease.job.run_id)
            if RunState(run.status) is RunState.QUEUED:
                runs_sql.transition_run(
                    session,
                    run.run_id,
                    from_state=RunState.QUEUED,
                    to_state=run_states.next_state(RunState.QUEUED, RunEvent.STARTED),
                    event=RunEvent.STARTED,
                    at=now,
                    started_at=now,
                )
            leases_sql.touch_runner(session, runner_id, at=now)
        job, attempt = lease.job, lease.attempt
        logger.info(
            "Job %r of run %s leased to runner %s (attempt %d).",
            job.name,
            job.run_id,
            runner_id,
            attempt.number,
            extra={
                "action": "lease_acquired",
                "run_id": job.run_id,
                "job_id": job.job_id,
                "attempt_id": attempt.attempt_id,
                "runner_id": runner_id,
            },
        )
        env = run.workflow_json.get("env") if isinstance(run.workflow_json, dict) else None
        return LeasedJob(
            run_id=job.run_id,
            job_id=job.job_id,
            job_name=job.name,
            attempt_id=attempt.attempt_id,
            attempt_number=attempt.number,
            lease_token=token,
            lease_expires_at=attempt.lease_expires_at,
            spec=job.spec,
            workflow_env=dict(env) if isinstance(env, dict) else {},
            workflow_name=run.workflow_name,
            source_digest=run.source_digest,
            context=run_context_of(run),
            trust_tier=run.trust_tier,
        )

    def heartbeat(self, attempt_id: str, lease_token: str) -> Heartbeat:
        """Extend the attempt's lease by the TTL, and tell the runner whether to cancel.

        An expired lease that the janitor has not reclaimed yet is still the runner's: the
        heartbeat extends it, and the janitor's guarded update then finds nothing to reclaim.

        Raises
        ------
        LeaseLost
            Wrong token, or the attempt ended (completed or reclaimed): stop working on the job.
        """
        now = self._now()
        expires_at = now + self._lease_ttl
        with self._db.session() as session:
            attempt = leases_sql.extend_lease(
                session, attempt_id, lease_token, running=AttemptState.RUNNING, expires_at=expires_at
            )
            run = self._run(session, attempt.run_id)
            leases_sql.touch_runner(session, attempt.runner_id, at=now)
        return Heartbeat(expires_at=expires_at, cancel_requested=run.cancel_requested)

    def append_logs(self, attempt_id: str, lease_token: str, chunks: Sequence[LogChunk]) -> None:
        """Store log chunks of the attempt; chunks whose ``seq`` is already stored are ignored.

        Raises
        ------
        LeaseLost
            The caller does not hold the lease: nothing is stored.
        UsageError
            A negative ``seq`` or too many chunks in one call.
        """
        if len(chunks) > _MAX_LOG_CHUNKS_PER_CALL:
            raise UsageError(f"at most {_MAX_LOG_CHUNKS_PER_CALL} log chunks per call, not {len(chunks)}")
        if any(c.seq < 0 for c in chunks):
            raise UsageError("log chunk sequence numbers start at 0")
        now = self._now()
        with self._db.session() as session:
            attempt = self._hold(session, attempt_id, lease_token)
            logs_sql.append_log_chunks(session, attempt, chunks, at=now)

    def step_started(self, attempt_id: str, lease_token: str, index: int, name: str) -> None:
        """Record that the attempt started step ``index``. Repeating the call changes nothing.

        Raises
        ------
        LeaseLost
            The caller does not hold the lease.
        IllegalTransition
            The step was reported finished already.
        """
        now = self._now()
        with self._db.session() as session:
            attempt = self._hold(session, attempt_id, lease_token)
            step = attempts_sql.get_step(session, attempt_id, index)
            current = StepState.UNREPORTED if step is None else StepState(step.status)
            if current is StepState.RUNNING:
                return  # a retried report
            target = step_states.next_state(current, StepEvent.STARTED)
            attempts_sql.insert_step(
                session,
                attempt,
                index=index,
                name=name,
                status=target,
                event=StepEvent.STARTED,
                at=now,
                started_at=now,
            )

    def step_finished(
        self,
        attempt_id: str,
        lease_token: str,
        index: int,
        *,
        status: str,
        exit_code: int | None,
        signal: int | None,
        killed_by: str | None,
        duration_s: float,
        name: str | None = None,
    ) -> None:
        """Record how step ``index`` ended. Repeating the call with the same status changes nothing.

        Parameters
        ----------
        status
            ``"success"``, ``"failed"`` or ``"skipped"``. Only ``skipped`` is accepted for a step
            that was never reported started.
        exit_code, signal, killed_by, duration_s
            As the sandbox reported them (``killed_by``: e.g. ``"timeout"``, ``"memory"``, ``"cancel"``).
        name
            The step's name, for a step never reported started.

        Raises
        ------
        LeaseLost
            The caller does not hold the lease.
        IllegalTransition
            Not allowed by the step table (e.g. success for a step never started, or a second,
            different ending).
        UsageError
            An unknown status.
        """
        if status not in step_states.FINISH_EVENTS:
            raise UsageError(f"unknown step status {status!r}: expected success, failed or skipped")
        event = step_states.FINISH_EVENTS[status]
        now = self._now()
        with self._db.session() as session:
            attempt = self._hold(session, attempt_id, lease_token)
            step = attempts_sql.get_step(session, attempt_id, index)
            current = StepState.UNREPORTED if step is None else StepState(step.status)
            if current.value == status:
                return  # a retried report
            target = step_states.next_state(current, event)
            if step is None:
                attempts_sql.insert_step(
                    session,
                    attempt,
                    index=index,
                    name=name or f"step {index}",
                    status=target,
                    event=event,
                    at=now,
                    started_at=None,
                    finished_at=now,
                    exit_code=exit_code,
                    signal=signal,
                    killed_by=killed_by,
                    duration_s=duration_s,
                )
            else:
                attempts_sql.transition_step(
                    session,
                    attempt,
                    index=index,
                    from_state=current,
                    to_state=target,
                    event=event,
                    at=now,
                    exit_code=exit_code,
                    signal=signal,
                    killed_by=killed_by,
                    duration_s=duration_s,
                )

    def report_image(self, attempt_id: str, lease_token: str, name: str, digest: str) -> None:
        """Record the image the attempt runs in (its name and resolved digest).

        Raises
        ------
        LeaseLost
            The caller does not hold the lease.
        """
        with self._db.session() as session:
            attempt = self._hold(session, attempt_id, lease_token)
            attempts_sql.record_image(session, attempt, name=name, digest=digest)

    def report(self, attempt_id: str, lease_token: str, section: str, value: Any) -> None:
        """Record one section of what the attempt's phases did (caches, artifacts, image).

        Raises
        ------
        LeaseLost
            The caller does not hold the lease.
        """
        with self._db.session() as session:
            attempt = self._hold(session, attempt_id, lease_token)
            attempts_sql.record_report(session, attempt, section=section, value=value)

    def complete_attempt(
        self, attempt_id: str, lease_token: str, *, status: str, error_message: str | None = None
    ) -> None:
        """End the attempt and its job with ``status``, and move the run on.

        On success the next job is queued; otherwise every later job is skipped. When all jobs are
        final, the run takes their combined outcome. Calling again with the same status (a retried
        request) changes nothing.

        Parameters
        ----------
        status
            ``"success"``, ``"failed"`` (the user's code failed), ``"error"`` (kiln or the machine
            broke) or ``"cancelled"`` (the run was cancelled).
        error_message
            Why, for failed, error and cancelled.

        Raises
        ------
        LeaseLost
            Wrong token, or the attempt was reclaimed: its outcome is discarded.
        IllegalTransition
            The attempt was already completed with another status.
        UsageError
            An unknown status.
        """
        if status not in attempt_states.COMPLETION_EVENTS:
            raise UsageError(
                f"unknown attempt status {status!r}: expected success, failed, error or cancelled"
            )
        event = attempt_states.COMPLETION_EVENTS[status]
        now = self._now()
        with self._db.session() as session:
            found = attempts_sql.get_attempt(session, attempt_id)
            if found is None:
                raise LeaseLost(f"attempt {attempt_id} does not exist")
            run = self._locked_run(session, found.run_id)  # lock order: run, attempt, jobs
            attempt = attempts_sql.get_attempt(session, attempt_id, for_update=True)
            assert attempt is not None  # attempts are never deleted while their run exists
            current = AttemptState(attempt.status)
            if not leases_sql.holds(attempt, lease_token) or current is AttemptState.LOST:
                raise LeaseLost(leases_sql.why_lost(attempt_id, attempt, lease_token))
            if current.value == status:
                return  # the lease holder repeating itself, e.g. after a lost response
            target = attempt_states.next_state(current, event)
            attempts_sql.transition_attempt(
                session,
                attempt,
                from_state=current,
                to_state=target,
                event=event,
                at=now,
                lease_token=lease_token,
                error_message=error_message,
            )
            job = self._job(session, attempt.job_id)
            self._move_job(
                session,
                job,
                _JOB_EVENT_FOR_ATTEMPT[target],
                now,
                attempt_id=attempt_id,
                error_message=error_message,
            )
            self._advance(session, run, now)
        logger.info(
            "Attempt %d of job %r completed: %s.",
            attempt.number,
            job.name,
            status,
            extra={
                "action": "attempt_completed",
                "run_id": attempt.run_id,
                "job_id": job.job_id,
                "attempt_id": attempt_id,
                "runner_id": attempt.runner_id,
                "status": status,
            },
        )

    def release_attempt(self, attempt_id: str, lease_token: str, *, reason: str) -> None:
        """Give the job back: the attempt ends ``lost`` now and the job is queued again.

        What a runner does when it must stop before its job is done (SIGTERM, shutdown): the same
        as the janitor's reclaim of an expired lease, without waiting for the lease to expire. The
        attempt counts against the job's attempts; its logs are kept, and its token is dead at once,
        so the runner is fenced from here on.

        Parameters
        ----------
        reason
            Why, for the attempt's record.

        Raises
        ------
        LeaseLost
            The caller does not hold the lease.
        """
        now = self._now()
        with self._db.session() as session:
            found = attempts_sql.get_attempt(session, attempt_id)
            if found is None:
                raise LeaseLost(f"attempt {attempt_id} does not exist")
            run = self._locked_run(session, found.run_id)  # lock order: run, attempt, jobs
            attempt = attempts_sql.get_attempt(session, attempt_id, for_update=True)
            assert attempt is not None
            if not leases_sql.holds(attempt, lease_token) or attempt.status != AttemptState.RUNNING:
                raise LeaseLost(leases_sql.why_lost(attempt_id, attempt, lease_token))
            job = self._job(session, attempt.job_id)
            event, message = self._after_loss(run, job, "its runner gave it back")
            job_status = self._lose(
                session,
                run,
                attempt,
                job,
                event,
                now,
                job_message=message,
                attempt_message=f"given back by runner {attempt.runner_id}: {reason}"[:2000],
                lease_token=lease_token,
            )
        logger.info(
            "Runner %s gave back job %r (attempt %d); the job is now %s.",
            attempt.runner_id,
            job.name,
            attempt.number,
            job_status,
            extra={
                "action": "attempt_released",
                "run_id": attempt.run_id,
                "job_id": job.job_id,
                "attempt_id": attempt_id,
                "runner_id": attempt.runner_id,
            },
        )

    def _lose(
        self,
        session: Session,
        run: RunRecord,
        attempt: AttemptRecord,
        job: JobRecord,
        event: JobEvent,
        now: datetime,
        *,
        job_message: str | None,
        attempt_message: str,
        lease_token: str | None = None,
        expired_before: datetime | None = None,
    ) -> JobState:
        """End a running attempt ``lost`` (guarded by its token or its expiry), move its job on
        with ``event``, and apply the run's rule; ``run`` is locked by the caller."""
        attempts_sql.transition_attempt(
            session,
            attempt,
            from_state=AttemptState.RUNNING,
            to_state=attempt_states.next_state(AttemptState.RUNNING, AttemptEvent.LOST),
            event=AttemptEvent.LOST,
            at=now,
            lease_token=lease_token,
            expired_before=expired_before,
            error_message=attempt_message,
        )
        job_status = self._move_job(
            session, job, event, now, attempt_id=attempt.attempt_id, error_message=job_message
        )
        self._advance(session, run, now)
        return job_status

    def _after_loss(self, run: RunRecord, job: JobRecord, why: str) -> tuple[JobEvent, str | None]:
        """What happens to a job whose attempt was lost: cancelled, queued again, or out of attempts."""
        lost = AttemptState.LOST
        if run.cancel_requested:
            return JobEvent.CANCELLED, f"the run was cancelled and {why}"
        if self._retry.should_retry(lost, attempts_made=job.attempts_count, max_attempts=job.max_attempts):
            return JobEvent.REQUEUED, None
        return JobEvent.EXHAUSTED, (
            f"lost {job.attempts_count} times: {why} and the job has no attempts left "
            f"(max_attempts={job.max_attempts})"
        )

    # -- the janitor's side -----------------------------------------------------------------------

    def reclaim_expired_leases(self, *, dry_run: bool = False, limit: int = 100) -> list[ReclaimedAttempt]:
        """Reclaim attempts whose lease expired: they become ``lost`` (their logs are kept).

        Each lost attempt's job is queued again while it has attempts left, or errors ("lost N
        times") when it has none; a job of a run being cancelled is cancelled instead. Each attempt
        is reclaimed in its own transaction, with a guarded update that repeats the expiry check: a
        runner whose heartbeat lands first keeps its lease. The runner of a reclaimed attempt is
        fenced: its next heartbeat, log or completion raises :class:`LeaseLost`.

        Parameters
        ----------
        dry_run
            Report what would be done, change nothing.
        limit
            At most this many attempts per call.

        Returns
        -------
        list[ReclaimedAttempt]
            What was (or would be) done, one entry per attempt.
        """
        now = self._now()
        with self._db.read_session() as session:
            expired = leases_sql.find_expired_leases(
                session, now=now, running=AttemptState.RUNNING, limit=limit
            )
        done = []
        for candidate in expired:
            try:
                with self._db.read_session() if dry_run else self._db.session() as session:
                    reclaimed = self._reclaim(session, candidate, now, dry_run=dry_run)
            except IllegalTransition:
                # The runner's heartbeat or completion won the race: nothing to reclaim.
                logger.info(
                    "Attempt %s renewed or ended before it was reclaimed.",
                    candidate.attempt_id,
                    extra={"action": "reclaim_skipped", "attempt_id": candidate.attempt_id},
                )
                continue
            done.append(reclaimed)
            if not dry_run:
                logger.warning(
                    "Runner %s lost the lease of job %r (attempt %d); the job is now %s.",
                    reclaimed.runner_id,
                    reclaimed.job_name,
                    reclaimed.attempt_number,
                    reclaimed.job_status,
                    extra={
                        "action": "lease_reclaimed",
                        "run_id": reclaimed.run_id,
                        "job_id": reclaimed.job_id,
                        "attempt_id": reclaimed.attempt_id,
                        "runner_id": reclaimed.runner_id,
                    },
                )
        return done

    def _reclaim(
        self, session: Session, candidate: AttemptRecord, now: datetime, *, dry_run: bool
    ) -> ReclaimedAttempt:
        run = self._locked_run(session, candidate.run_id)
        attempt = attempts_sql.get_attempt(session, candidate.attempt_id, for_update=True)
        if attempt is None or attempt.status != AttemptState.RUNNING or attempt.lease_expires_at >= now:
            raise IllegalTransition(f"attempt {candidate.attempt_id} no longer has an expired lease")
        job = self._job(session, attempt.job_id)
        event, message = self._after_loss(run, job, "the runner stopped heartbeating")
        job_status = job_states.next_state(JobState(job.status), event)
        if not dry_run:
            self._lose(
                session,
                run,
                attempt,
                job,
                event,
                now,
                job_message=message,
                attempt_message=(
                    f"lease expired at {attempt.lease_expires_at.isoformat()} (runner {attempt.runner_id})"
                ),
                expired_before=now,
            )
        return ReclaimedAttempt(
            run_id=run.run_id,
            job_id=job.job_id,
            job_name=job.name,
            attempt_id=attempt.attempt_id,
            attempt_number=attempt.number,
            runner_id=attempt.runner_id,
            lease_expired_at=attempt.lease_expires_at,
            job_status=job_status.value,
            dry_run=dry_run,
        )

    # -- the rules of a run -----------------------------------------------------------------------

    def _advance(self, session: Session, run: RunRecord, now: datetime) -> None:
        """Apply the sequential rule after a job changed; ``run`` is locked by the caller.

        The first job that has not succeeded decides: pending → queue it; final → skip every later
        waiting job; queued or running → wait. When every job is final, finish the run.
        """
        jobs = jobs_sql.list_jobs(session, run.run_id)
        states = {job.job_id: JobState(job.status) for job in jobs}
        blocker = next((j for j in jobs if states[j.job_id] is not JobState.SUCCESS), None)
        waiting = (JobState.PENDING, JobState.QUEUED)
        if blocker is not None:
            blocking = states[blocker.job_id]
            later_jobs = jobs[jobs.index(blocker) + 1 :]
            if blocking is JobState.PENDING and not run.cancel_requested:
                states[blocker.job_id] = self._move_job(session, blocker, JobEvent.READY, now)
            elif blocking is JobState.PENDING:
                # cancel_run cancels waiting jobs itself; this only keeps a cancelled run from
                # ever holding a job that nobody will queue.
                for job in [blocker, *later_jobs]:
                    if states[job.job_id] in waiting:
                        states[job.job_id] = self._move_job(
                            session, job, JobEvent.CANCELLED, now, error_message="the run was cancelled"
                        )
            elif blocking in job_states.FINAL_STATES:
                reason = f"skipped because job {blocker.name!r} ended {blocking}"
                for job in later_jobs:
                    if states[job.job_id] in waiting:
                        states[job.job_id] = self._move_job(
                            session, job, JobEvent.SKIPPED, now, error_message=reason
                        )
        if not all(state in job_states.FINAL_STATES for state in states.values()):
            return
        current = RunState(run.status)
        if current in run_states.FINAL_STATES:
            return
        outcome = combine(JobOutcome.of(state) for state in states.values())
        event = run_event_for(outcome)
        if current is RunState.QUEUED and event is not RunEvent.CANCELLED:
            # Every job ended without ever running, yet not by cancellation: cannot happen with the
            # rules above; refuse rather than invent a run history.
            raise IllegalTransition(f"run {run.run_id} would finish {outcome} without having started")
        runs_sql.transition_run(
            session,
            run.run_id,
            from_state=current,
            to_state=run_states.next_state(current, event),
            event=event,
            at=now,
            finished_at=now,
        )
        logger.info(
            "Run %s finished: %s.",
            run.run_id,
            outcome,
            extra={"action": "run_finished", "run_id": run.run_id, "status": outcome.value},
        )

    def _move_job(
        self,
        session: Session,
        job: JobRecord,
        event: JobEvent,
        now: datetime,
        *,
        attempt_id: str | None = None,
        error_message: str | None = None,
    ) -> JobState:
        current = JobState(job.status)
        target = job_states.next_state(current, event)
        jobs_sql.transition_job(
            session,
            job,
            from_state=current,
            to_state=target,
            event=event,
            at=now,
            attempt_id=attempt_id,
            finished_at=now if target in job_states.FINAL_STATES else None,
            error_message=error_message,
        )
        return target

    # -- small helpers ----------------------------------------------------------------------------

    def _hold(self, session: Session, attempt_id: str, lease_token: str) -> AttemptRecord:
        return leases_sql.hold_lease(session, attempt_id, lease_token, running=AttemptState.RUNNING)

    def _run(self, session: Session, run_id: str) -> RunRecord:
        run = runs_sql.get_run(session, run_id)
        if run is None:
            raise NotFound(f"no run {run_id}")
        return run

    def _locked_run(self, session: Session, run_id: str) -> RunRecord:
        run = runs_sql.get_run(session, run_id, for_update=True)
        if run is None:
            raise NotFound(f"no run {run_id}")
        return run

    def _job(self, session: Session, job_id: str) -> JobRecord:
        job = jobs_sql.get_job(session, job_id)
        if job is None:
            raise NotFound(f"no job {job_id}")
        return job

    def _view(self, session: Session, run_id: str, *, tenant: str | None = None) -> RunView:
        run = runs_sql.get_run(session, run_id, tenant=tenant)
        if run is None:
            raise NotFound(f"no run {run_id}" + (f" for tenant {tenant!r}" if tenant is not None else ""))
        jobs = jobs_sql.list_jobs(session, run_id)
        attempts = attempts_sql.list_attempts(session, [j.job_id for j in jobs])
        steps = attempts_sql.list_steps(session, [a.attempt_id for a in attempts])
        return build_run_view(run, jobs, attempts, steps)
