"""The control plane's artifact service: reserve, finalize and fail for producers; gating for the
jobs that ``needs:`` them; list and download for users.

Artifacts are rows of ``entries`` (kind ``artifact``) under the commit protocol of
:mod:`kiln.metadata.entries`; this module decides what the rows mean:

- **Identity** is run + job + name: the create-only commit lets one artifact of that identity be
  committed, ever. A retried attempt that packs the same bytes finds it committed and uploads
  nothing; one that packs other bytes keeps the first (an artifact never changes once a later job
  may have read it) and is told so.
- **Everything about the run comes from the attempt.** A runner proves it holds the attempt's lease;
  the tenant, repository, run, job, retention and the jobs it needs are read from the stored run,
  never taken from the runner. A runner can only reserve artifacts its job declares.
- **Visibility**: only ``committed`` rows whose retention has not run out. An artifact whose
  ``expires_at`` has passed is reported ``expired`` at once, before the janitor gets to it.
- **Gating**: a job that needs another gets, per declared artifact, ``committed`` (with its
  manifest), ``uploading`` (the producing attempt still holds its lease: wait) or the reason it
  cannot have it: ``failed`` (with the producer's reason), ``expired``, ``deleted``, ``missing``.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session

from kiln.archive import ARCHIVE_FORMAT
from kiln.artifacts import wire
from kiln.artifacts.states import OPEN_STATES, ArtifactEvent, ArtifactState, next_state
from kiln.errors import Conflict, IntegrityError, NotFound, StorageUnavailable, UsageError
from kiln.metadata import attempts, entries, jobs, leases, runs, uploads
from kiln.metadata.db import Database
from kiln.metadata.entries import EntryRecord
from kiln.metadata.records import JobRecord, RunRecord
from kiln.scheduler.attempt_states import AttemptState
from kiln.spec.artifacts import Artifact
from kiln.storage import BlobReader, BlobStore
from kiln.storage.base import Hasher

__all__ = ["KIND", "MANIFEST_LIMIT", "ArtifactService", "artifact_out", "identity_of"]

logger = logging.getLogger(__name__)

KIND = "artifact"
#: The ``key`` column of artifact rows: artifacts are found by identity, so it only names the format.
KEY = "kiln.artifact.v1"
#: Manifest entries kept in the row; an artifact with more files keeps its first ones and says so.
MANIFEST_LIMIT = 10_000
_IDENTITY_MAX = 200  # the entries.identity column
_ALL_STATES = tuple(state.value for state in ArtifactState)


def identity_of(run_id: str, job: str, name: str) -> str:
    """What the create-only commit keeps unique: one artifact per run, job and name."""
    identity = f"{run_id}/{job}/{name}"
    if len(identity) <= _IDENTITY_MAX:
        return identity
    return "sha256:" + hashlib.sha256(identity.encode()).hexdigest()  # a very long job name


def artifact_out(entry: EntryRecord, *, with_manifest: bool = False) -> wire.ArtifactOut:
    """The API view of an artifact row."""
    meta = entry.meta
    manifest = [wire.ManifestEntry.model_validate(m) for m in meta.get("manifest", [])]
    return wire.ArtifactOut(
        artifact_id=entry.entry_id,
        run_id=entry.producer_run_id or "",
        job=entry.producer_job or "",
        name=entry.name,
        state=entry.status,
        digest=entry.digest,
        size_bytes=entry.size_bytes,
        files=int(meta.get("files", 0)),
        unpacked_bytes=int(meta.get("unpacked_bytes", 0)),
        created_at=entry.created_at,
        committed_at=entry.committed_at,
        expires_at=entry.expires_at,
        attempt_number=meta.get("attempt_number"),
        failure=entry.failure,
        manifest=manifest if with_manifest else None,
        manifest_truncated=bool(meta.get("manifest_truncated", False)),
    )


@dataclass(frozen=True)
class _Attempt:
    attempt_id: str
    number: int
    run: RunRecord
    job: JobRecord


class ArtifactService:
    """Artifacts over the metadata database and the blob store.

    Parameters
    ----------
    db
        The metadata database (migrated).
    blobs
        The blob store holding the artifacts' archives.
    clock
        Seconds since the epoch; tests move it to expire artifacts.
    """

    def __init__(self, db: Database, blobs: BlobStore, *, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._blobs = blobs
        self._clock = clock

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), tz=UTC)

    @contextmanager
    def _attempt(self, attempt_id: str, lease_token: str) -> Iterator[tuple[Session, _Attempt]]:
        """A write session and the attempt the token holds, with its run and job as stored."""
        with self._db.session() as session:
            attempt = leases.hold_lease(session, attempt_id, lease_token, running=AttemptState.RUNNING)
            run = runs.get_run(session, attempt.run_id)
            job = jobs.get_job(session, attempt.job_id)
            if run is None or job is None:
                raise NotFound(f"attempt {attempt_id} has no run or job")
            yield session, _Attempt(attempt_id, attempt.number, run, job)

    @staticmethod
    def _declared(job: JobRecord, name: str) -> Artifact:
        for data in job.spec.get("artifacts", []):
            if data.get("name") == name:
                return Artifact.model_validate(data)
        raise UsageError(f"job {job.name!r} declares no artifact named {name!r}")

    def _own(self, session: Session, attempt: _Attempt, artifact_id: str) -> EntryRecord:
        entry = entries.get(session, artifact_id)
        if entry.kind != KIND or entry.producer_attempt_id != attempt.attempt_id:
            raise NotFound(f"no artifact {artifact_id} reserved by attempt {attempt.attempt_id}")
        return entry

    # -- producers --------------------------------------------------------------------------------

    def reserve(self, attempt_id: str, lease_token: str, body: wire.ArtifactReserveIn) -> wire.ArtifactOut:
        """Claim the upload of a declared artifact; say whether its blob still has to be sent.

        Returns the committed artifact instead when an earlier attempt of the job committed it
        (``upload_needed`` False; its digest says whether it holds the same bytes).

        Raises
        ------
        UsageError
            The job declares no such artifact, or a digest without a size.
        LeaseLost
            The token does not hold the attempt.
        """
        if (body.digest is None) != (body.size_bytes is None):
            raise UsageError("an artifact reservation gives both digest and size_bytes, or neither")
        now = self._now()
        with self._attempt(attempt_id, lease_token) as (session, attempt):
            declared = self._declared(attempt.job, body.name)
            run = attempt.run
            identity = identity_of(run.run_id, attempt.job.name, body.name)
            existing = entries.find_committed(session, tenant=run.tenant, kind=KIND, identity=identity)
            if existing is not None:
                return artifact_out(existing)
            manifest = [m.model_dump() for m in body.manifest[:MANIFEST_LIMIT]]
            entry = entries.reserve(
                session,
                tenant=run.tenant,
                repo=run.repo,
                scope=f"run/{run.run_id}",
                kind=KIND,
                name=body.name,
                key=KEY,
                identity=identity,
                trust_tier=run.trust_tier,
                at=now,
                expires_at=now + timedelta(seconds=declared.retention_s),
                producer_run_id=run.run_id,
                producer_job=attempt.job.name,
                producer_attempt_id=attempt_id,
                meta={
                    "files": body.files,
                    "unpacked_bytes": body.unpacked_bytes,
                    "manifest": manifest,
                    "manifest_truncated": len(body.manifest) > MANIFEST_LIMIT,
                    "attempt_number": attempt.number,
                    "archive": ARCHIVE_FORMAT,
                    "paths": list(declared.paths),
                    "exclude": list(declared.exclude),
                },
            )
            upload_needed = False
            if body.digest is not None and body.size_bytes is not None:
                # Recording the digest now makes the janitor keep the blob, even an old copy that
                # is stored already (the same bytes from an earlier attempt): that one needs no upload.
                next_state(ArtifactState(entry.status), ArtifactEvent.UPLOAD)
                entry = entries.mark_uploading(
                    session, entry.entry_id, digest=body.digest, size_bytes=body.size_bytes
                )
                # Only a blob the tenant holds already may be skipped: one that only another tenant
                # stored goes through the upload, which asks for a proof of possession.
                holds = uploads.attempt_holds(session, attempt.attempt_id, body.digest)
                upload_needed = not (holds and self._blobs.exists(body.digest))
        out = artifact_out(entry)
        return out.model_copy(update={"upload_needed": upload_needed})

    def finalize(
        self, attempt_id: str, lease_token: str, artifact_id: str, body: wire.ArtifactFinalizeIn
    ) -> wire.ArtifactOut:
        """Commit an artifact whose blob is stored with the size claimed. Idempotent.

        When an earlier attempt of the job committed the same identity first, its artifact is
        returned (and this one ends ``failed``, ``lost-race``).

        Raises
        ------
        Conflict
            The blob is not stored, or the artifact is in a state that cannot commit.
        IntegrityError
            The stored blob has another size.
        """
        with self._attempt(attempt_id, lease_token) as (session, attempt):
            entry = self._own(session, attempt, artifact_id)
            next_state(ArtifactState(entry.status), ArtifactEvent.COMMIT)
        # The blob is checked outside the transaction: no database lock is held while storage answers.
        try:
            stored = self._blobs.stat(body.digest)
        except StorageUnavailable as exc:
            raise Conflict(
                f"blob {body.digest} of artifact {artifact_id} is not stored: {exc.message}"
            ) from exc
        if stored != body.size_bytes:
            raise IntegrityError(f"blob {body.digest} holds {stored} bytes, not {body.size_bytes}")
        with self._attempt(attempt_id, lease_token) as (session, attempt):
            entry = self._own(session, attempt, artifact_id)
            next_state(ArtifactState(entry.status), ArtifactEvent.COMMIT)
            if not uploads.attempt_holds(session, attempt.attempt_id, body.digest):
                # A digest is not the bytes: whoever learned one must not commit, then read, the blob.
                raise Conflict(
                    f"blob {body.digest} of artifact {artifact_id} was not uploaded (or proven) by "
                    f"tenant {attempt.run.tenant!r}"
                )
            result = entries.commit(
                session,
                artifact_id,
                digest=body.digest,
                size_bytes=body.size_bytes,
                at=self._now(),
                compression="zstd",
            )
        logger.info(
            "Artifact %s of job %s %s.",
            entry.name,
            entry.producer_job,
            "committed" if result.won else "was committed by an earlier attempt",
            extra={"action": "artifact_commit", "artifact_id": artifact_id, "attempt_id": attempt_id},
        )
        return artifact_out(result.entry)

    def fail(self, attempt_id: str, lease_token: str, artifact_id: str, reason: str) -> wire.ArtifactOut:
        """Record that an artifact will not be committed, and why (shown to the jobs that need it)."""
        with self._attempt(attempt_id, lease_token) as (session, attempt):
            entry = self._own(session, attempt, artifact_id)
            if ArtifactState(entry.status) in OPEN_STATES:
                entries.fail(session, artifact_id, reason)
            return artifact_out(entries.get(session, artifact_id))

    # -- consumers --------------------------------------------------------------------------------

    def needed(self, attempt_id: str, lease_token: str) -> list[wire.NeededArtifactOut]:
        """The artifacts of the jobs the attempt's job ``needs:``, each with its state.

        An artifact declared ``when: on-failure`` by a producer that succeeded was never meant to
        exist and is left out; so is ``on-success`` by a producer that failed.
        """
        now = self._now()
        found: list[wire.NeededArtifactOut] = []
        with self._attempt(attempt_id, lease_token) as (session, attempt):
            producers = {j.name: j for j in jobs.list_jobs(session, attempt.run.run_id)}
            rows = entries.search(
                session,
                tenant=attempt.run.tenant,
                kind=KIND,
                statuses=_ALL_STATES,
                producer_run_id=attempt.run.run_id,
                limit=100_000,
            )
            for job_name in attempt.job.spec.get("needs", []):
                producer = producers.get(job_name)
                if producer is None:
                    raise NotFound(f"job {attempt.job.name!r} needs {job_name!r}; the run has no such job")
                for data in producer.spec.get("artifacts", []):
                    declared = Artifact.model_validate(data)
                    if not _expected(declared, producer.status):
                        continue
                    mine = [r for r in rows if r.producer_job == job_name and r.name == declared.name]
                    found.append(self._gate(session, job_name, declared.name, mine, now))
        return found

    def _gate(
        self, session: Session, job: str, name: str, rows: list[EntryRecord], now: datetime
    ) -> wire.NeededArtifactOut:
        committed = next((r for r in rows if r.status == ArtifactState.COMMITTED), None)
        if committed is not None:
            if committed.expires_at is not None and committed.expires_at <= now:
                return wire.NeededArtifactOut(
                    name=name,
                    job=job,
                    state="expired",
                    reason=f"its retention ended at {committed.expires_at.isoformat()}",
                    artifact=artifact_out(committed),
                )
            return wire.NeededArtifactOut(
                name=name, job=job, state="committed", artifact=artifact_out(committed, with_manifest=True)
            )
        for row in rows:
            if ArtifactState(row.status) in OPEN_STATES and row.producer_attempt_id is not None:
                producer = attempts.get_attempt(session, row.producer_attempt_id)
                if producer is not None and producer.status == AttemptState.RUNNING:
                    return wire.NeededArtifactOut(
                        name=name,
                        job=job,
                        state="uploading",
                        reason=f"attempt {producer.number} of job {job!r} is still uploading it",
                        artifact=artifact_out(row),
                    )
        if not rows:
            return wire.NeededArtifactOut(
                name=name, job=job, state="missing", reason=f"job {job!r} did not upload it"
            )
        last = rows[0]  # newest first
        state = ArtifactState(last.status)
        if state in OPEN_STATES:
            reason = f"the upload of attempt {last.meta.get('attempt_number', '?')} was abandoned unfinished"
            return wire.NeededArtifactOut(
                name=name, job=job, state="failed", reason=reason, artifact=artifact_out(last)
            )
        reason = last.failure or None
        if state == ArtifactState.EXPIRED and reason in (None, "retention"):
            reason = "its retention ended"
        return wire.NeededArtifactOut(
            name=name,
            job=job,
            state=state.value,
            reason=reason,
            artifact=artifact_out(last),  # type: ignore[arg-type]
        )

    # -- users ------------------------------------------------------------------------------------

    def list_run(
        self, run_id: str, *, tenant: str | None = None, everything: bool = False
    ) -> list[wire.ArtifactOut]:
        """The artifacts of a run, by job and name; only the visible ones unless ``everything``.

        Raises
        ------
        NotFound
            No such run (for this tenant).
        """
        now = self._now()
        with self._db.read_session() as session:
            run = runs.get_run(session, run_id, tenant=tenant)
            if run is None:
                raise NotFound(f"no run {run_id}")
            rows = entries.search(
                session,
                tenant=run.tenant,
                kind=KIND,
                statuses=_ALL_STATES if everything else (ArtifactState.COMMITTED.value,),
                producer_run_id=run_id,
                limit=100_000,
            )
        shown = [artifact_out(_as_seen(row, now)) for row in rows]
        if not everything:
            shown = [a for a in shown if a.state == ArtifactState.COMMITTED]
        return sorted(shown, key=lambda a: (a.job, a.name, a.created_at))

    def get(
        self, run_id: str, name: str, *, job: str | None = None, tenant: str | None = None
    ) -> wire.ArtifactOut:
        """The visible artifact ``name`` of a run, with its manifest.

        Raises
        ------
        NotFound
            No such run, or no committed artifact of that name (the message says what there is).
        UsageError
            Several jobs of the run produced an artifact of that name and ``job`` does not choose.
        """
        everything = self.list_run(run_id, tenant=tenant, everything=True)
        same_name = [a for a in everything if a.name == name and (job is None or a.job == job)]
        visible = [a for a in same_name if a.state == ArtifactState.COMMITTED]
        if len({a.job for a in visible}) > 1:
            jobs_named = ", ".join(sorted({a.job for a in visible}))
            raise UsageError(
                f"run {run_id} has artifacts named {name!r} from jobs {jobs_named}; choose one with --job"
            )
        if not visible:
            if same_name:
                last = same_name[-1]
                why = f": {last.failure}" if last.failure else ""
                raise NotFound(f"artifact {name!r} of job {last.job!r} in run {run_id} is {last.state}{why}")
            names = ", ".join(sorted({f"{a.job}/{a.name}" for a in everything})) or "none"
            raise NotFound(f"run {run_id} has no artifact named {name!r} (it has: {names})")
        with self._db.read_session() as session:
            return artifact_out(entries.get(session, visible[0].artifact_id), with_manifest=True)

    def open_blob(self, artifact: wire.ArtifactOut, *, hasher: Hasher | None = None) -> BlobReader:
        """A reader of a committed artifact's archive; it verifies the digest unless ``hasher`` relays."""
        if artifact.digest is None:
            raise NotFound(f"artifact {artifact.name!r} has no blob")
        return self._blobs.open(artifact.digest, hasher=hasher)


def _expected(declared: Artifact, producer_status: str) -> bool:
    """Whether a producer that ended ``producer_status`` was meant to upload ``declared``."""
    if declared.when == "on-failure":
        return producer_status in ("failed", "error")
    if declared.when == "on-success":
        return producer_status not in ("failed", "error")
    return True


def _as_seen(row: EntryRecord, now: datetime) -> EntryRecord:
    """A committed row past its retention is expired to every reader, janitor or not."""
    if row.status == ArtifactState.COMMITTED and row.expires_at is not None and row.expires_at <= now:
        return replace(row, status=ArtifactState.EXPIRED.value, failure="retention")
    return row
