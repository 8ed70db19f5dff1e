"""The control plane's artifact service on SQLite and PostgreSQL: reserve, finalize, gating, listing."""

from __future__ import annotations

import hashlib

import pytest
from tests.integration.artifacts.harness import upload_as
from tests.integration.metadata.helpers import FakeClock, complete, lease

from kiln.api.blob_sessions import PROVE, BlobSessions, challenge_of
from kiln.artifacts import wire
from kiln.artifacts.service import ArtifactService
from kiln.errors import (
    BlobNotFound,
    Conflict,
    DigestMismatch,
    IllegalTransition,
    LeaseLost,
    NotFound,
    UsageError,
)
from kiln.metadata import entries
from kiln.metadata.db import Database
from kiln.scheduler import LeasedJob, RunContext, RunView, Scheduler
from kiln.storage import BlobStore, possession

DIST = {"name": "dist", "paths": ["dist"], "retention_s": 3600.0}
LOGS = {"name": "logs", "paths": ["logs"], "when": "on-failure"}
EVERY = {"name": "report", "paths": ["report"], "when": "always"}


def _submit(
    scheduler: Scheduler, producer_artifacts: list[dict] | None = None, tenant: str = "acme"
) -> RunView:
    step = [{"run": "make"}]
    return scheduler.submit_run(
        RunContext(tenant=tenant, repo="web", ref="main"),
        workflow_name="ci",
        jobs=[
            (
                "build",
                {
                    "steps": step,
                    "artifacts": producer_artifacts if producer_artifacts is not None else [DIST],
                },
            ),
            ("test", {"steps": step, "needs": ["build"]}),
            ("deploy", {"steps": step}),
        ],
        workflow_json={"name": "ci"},
        workflow_text="name: ci\n",
        source_digest="sha256:" + "0" * 64,
    )


def _blob(blobs: BlobStore, data: bytes, job: LeasedJob, db: Database) -> tuple[str, int]:
    return upload_as(db, blobs, job, data)


def _reserve(service: ArtifactService, job: LeasedJob, name: str = "dist", data: bytes | None = b"x" * 100):
    digest = "sha256:" + hashlib.sha256(data).hexdigest() if data is not None else None
    body = wire.ArtifactReserveIn(
        name=name,
        digest=digest,
        size_bytes=len(data) if data is not None else None,
        files=1,
        unpacked_bytes=10,
        manifest=[wire.ManifestEntry(path="dist", kind="dir", mode=0o755)],
    )
    return service.reserve(job.attempt_id, job.lease_token, body)


def _produce(
    service: ArtifactService, blobs: BlobStore, build: LeasedJob, db: Database, data: bytes = b"x" * 100
) -> wire.ArtifactOut:
    reserved = _reserve(service, build, data=data)
    digest, size = _blob(blobs, data, build, db)
    return service.finalize(
        build.attempt_id,
        build.lease_token,
        reserved.artifact_id,
        wire.ArtifactFinalizeIn(digest=digest, size_bytes=size),
    )


def test_reserve_upload_finalize_and_the_next_job_gets_it(
    scheduler: Scheduler, service: ArtifactService, blobs: BlobStore, database: Database
) -> None:
    run = _submit(scheduler)
    build = lease(scheduler)
    reserved = _reserve(service, build)
    assert (reserved.state, reserved.upload_needed, reserved.job, reserved.attempt_number) == (
        "uploading",
        True,
        "build",
        1,
    )
    with pytest.raises(Conflict, match="is not stored"):
        service.finalize(
            build.attempt_id,
            build.lease_token,
            reserved.artifact_id,
            wire.ArtifactFinalizeIn(digest=reserved.digest, size_bytes=100),
        )
    digest, size = _blob(blobs, b"x" * 100, build, database)
    done = service.finalize(
        build.attempt_id,
        build.lease_token,
        reserved.artifact_id,
        wire.ArtifactFinalizeIn(digest=digest, size_bytes=size),
    )
    again = service.finalize(
        build.attempt_id,
        build.lease_token,
        reserved.artifact_id,
        wire.ArtifactFinalizeIn(digest=digest, size_bytes=size),
    )
    assert done.state == again.state == "committed" and done.committed_at == again.committed_at
    assert done.expires_at is not None and (done.expires_at - done.created_at).total_seconds() == 3600
    complete(scheduler, build)

    test = lease(scheduler)
    (needed,) = service.needed(test.attempt_id, test.lease_token)
    assert (needed.name, needed.job, needed.state) == ("dist", "build", "committed")
    assert needed.artifact is not None and needed.artifact.digest == digest
    assert needed.artifact.manifest == [wire.ManifestEntry(path="dist", kind="dir", mode=0o755)]
    assert [a.name for a in service.list_run(run.run_id)] == ["dist"]


def test_a_blob_the_tenant_stored_already_needs_no_upload(
    scheduler: Scheduler, service: ArtifactService, blobs: BlobStore, database: Database
) -> None:
    _submit(scheduler)
    build = lease(scheduler)
    _blob(blobs, b"x" * 100, build, database)
    reserved = _reserve(service, build)
    assert (reserved.state, reserved.upload_needed) == ("uploading", False)
    done = service.finalize(
        build.attempt_id,
        build.lease_token,
        reserved.artifact_id,
        wire.ArtifactFinalizeIn(digest=reserved.digest or "", size_bytes=100),
    )
    assert done.state == "committed"


def test_a_digest_alone_does_not_open_another_tenants_blob(
    scheduler: Scheduler, service: ArtifactService, blobs: BlobStore, database: Database
) -> None:
    """Dedup across tenants needs the bytes: a tenant that only knows a digest learns nothing of it."""
    secret = b"the other tenant's secret build output"
    theirs = _submit(scheduler, tenant="other")
    their_build = lease(scheduler, run_id=theirs.run_id)
    digest, size = _blob(blobs, secret, their_build, database)
    _submit(scheduler)
    build = lease(scheduler)
    sessions = BlobSessions(database, blobs)

    # Reserving with the digest asks for an upload; finalizing without one is refused.
    reserved = _reserve(service, build, data=secret)
    assert reserved.upload_needed
    with pytest.raises(Conflict, match="not uploaded"):
        service.finalize(
            build.attempt_id,
            build.lease_token,
            reserved.artifact_id,
            wire.ArtifactFinalizeIn(digest=digest, size_bytes=size),
        )
    # The upload is not told "stored" (nor the stored size: a wrong one gets the same answer)...
    for claimed in (size, size + 1):
        started = sessions.start(build.attempt_id, build.lease_token, digest, claimed, None)
        assert (started.exists, started.session, started.challenge) == (
            False,
            None,
            challenge_of(build.attempt_id),
        )
    # ...the blob cannot be downloaded, and a wrong proof is refused.
    with pytest.raises(BlobNotFound):
        sessions.download(build.attempt_id, build.lease_token, digest)
    wrong = possession.prove_chunks(challenge_of(build.attempt_id), [b"a guess"])
    with pytest.raises(DigestMismatch, match="proof of possession"):
        sessions.start(build.attempt_id, build.lease_token, digest, size, None, proof=wrong)
    # Another attempt's proof does not carry over.
    theirs_proof = possession.prove_chunks(challenge_of(their_build.attempt_id), [secret])
    with pytest.raises(DigestMismatch):
        sessions.start(build.attempt_id, build.lease_token, digest, size, None, proof=theirs_proof)

    # With the bytes, the proof stands in for the upload.
    digest_again, _ = _blob(blobs, secret, build, database)
    assert digest_again == digest
    done = service.finalize(
        build.attempt_id,
        build.lease_token,
        reserved.artifact_id,
        wire.ArtifactFinalizeIn(digest=digest, size_bytes=size),
    )
    assert done.state == "committed"
    assert sessions.download(build.attempt_id, build.lease_token, digest)[0] == size


def test_a_blob_another_tenant_stores_mid_upload_needs_a_proof_to_complete(
    scheduler: Scheduler, blobs: BlobStore, database: Database
) -> None:
    data = b"raced bytes" * 10
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    mine = _submit(scheduler)
    build = lease(scheduler, run_id=mine.run_id)
    sessions = BlobSessions(database, blobs)
    started = sessions.start(build.attempt_id, build.lease_token, digest, len(data), None)
    assert started.session is not None and started.challenge is None  # not stored yet: upload
    theirs = _submit(scheduler, tenant="other")
    _blob(blobs, data, lease(scheduler, run_id=theirs.run_id), database)  # they store it first
    session_id = started.session.session_id
    # Our PUT found it there (412): that alone says nothing about our bytes.
    assert sessions.complete(build.attempt_id, build.lease_token, session_id, None, existed=True) == (
        PROVE,
        len(data),
    )
    with pytest.raises(BlobNotFound):
        sessions.download(build.attempt_id, build.lease_token, digest)
    proof = possession.prove_chunks(challenge_of(build.attempt_id), [data])
    assert sessions.complete(
        build.attempt_id, build.lease_token, session_id, None, existed=True, proof=proof
    ) == ("existed", len(data))
    assert sessions.download(build.attempt_id, build.lease_token, digest)[0] == len(data)


def test_only_declared_artifacts_and_only_with_the_lease(
    scheduler: Scheduler, service: ArtifactService
) -> None:
    _submit(scheduler)
    build = lease(scheduler)
    with pytest.raises(UsageError, match="job 'build' declares no artifact named 'other'"):
        _reserve(service, build, name="other")
    with pytest.raises(LeaseLost):
        service.reserve(build.attempt_id, "not-the-token", wire.ArtifactReserveIn(name="dist"))
    with pytest.raises(UsageError, match="both digest and size_bytes"):
        service.reserve(
            build.attempt_id, build.lease_token, wire.ArtifactReserveIn(name="dist", size_bytes=3)
        )


def test_a_retried_attempt_finds_the_committed_artifact(
    scheduler: Scheduler, service: ArtifactService, blobs: BlobStore, clock: FakeClock, database: Database
) -> None:
    _submit(scheduler)
    first = lease(scheduler, "runner-a")
    _produce(service, blobs, first, database)
    clock.advance(60)  # the runner dies before it completes the job: the lease runs out
    assert scheduler.reclaim_expired_leases()
    second = lease(scheduler, "runner-b")
    assert second.job_name == "build" and second.attempt_number == 2
    again = _reserve(service, second, data=b"other bytes")
    assert (again.state, again.upload_needed, again.attempt_number) == ("committed", False, 1)


def test_a_failed_artifact_tells_the_next_job_why(scheduler: Scheduler, service: ArtifactService) -> None:
    _submit(scheduler)
    build = lease(scheduler)
    reserved = _reserve(service, build, data=None)
    assert reserved.state == "pending"
    failed = service.fail(build.attempt_id, build.lease_token, reserved.artifact_id, "no files matched dist")
    assert failed.state == "failed"
    with pytest.raises(IllegalTransition):
        service.finalize(
            build.attempt_id,
            build.lease_token,
            reserved.artifact_id,
            wire.ArtifactFinalizeIn(digest="sha256:" + "1" * 64, size_bytes=0),
        )
    complete(scheduler, build)
    test = lease(scheduler)
    (needed,) = service.needed(test.attempt_id, test.lease_token)
    assert (needed.state, needed.reason) == ("failed", "no files matched dist")


def test_missing_and_abandoned_uploads(scheduler: Scheduler, service: ArtifactService) -> None:
    _submit(scheduler, [DIST, EVERY])
    build = lease(scheduler)
    _reserve(service, build, name="report")  # uploading, then the attempt ends without finalize
    complete(scheduler, build)
    test = lease(scheduler)
    dist, report = service.needed(test.attempt_id, test.lease_token)
    assert (dist.state, dist.reason) == ("missing", "job 'build' did not upload it")
    assert report.state == "failed" and "abandoned" in (report.reason or "")


def test_when_decides_which_artifacts_a_job_needs(
    scheduler: Scheduler, service: ArtifactService, blobs: BlobStore
) -> None:
    _submit(scheduler, [DIST, LOGS, EVERY])
    build = lease(scheduler)
    complete(scheduler, build)
    test = lease(scheduler)
    # The build succeeded: its on-failure logs were never meant to exist.
    assert [n.name for n in service.needed(test.attempt_id, test.lease_token)] == ["dist", "report"]


def test_an_expired_artifact_is_gone_at_once(
    scheduler: Scheduler, service: ArtifactService, blobs: BlobStore, clock: FakeClock, database: Database
) -> None:
    run = _submit(scheduler)
    build = lease(scheduler)
    _produce(service, blobs, build, database)
    complete(scheduler, build)
    clock.advance(3601)  # past the retention; the janitor has not run
    test = lease(scheduler)
    (needed,) = service.needed(test.attempt_id, test.lease_token)
    assert needed.state == "expired" and "retention ended" in (needed.reason or "")
    assert service.list_run(run.run_id) == []
    assert [a.state for a in service.list_run(run.run_id, everything=True)] == ["expired"]
    with pytest.raises(NotFound, match=r"artifact 'dist' of job 'build' .* is expired"):
        service.get(run.run_id, "dist")
    # Once the janitor expires it, the state is stored.
    with database.session() as s:
        assert [e.name for e in entries.expire_due(s, now=clock_now(clock))] == ["dist"]
    (needed,) = service.needed(test.attempt_id, test.lease_token)
    assert (needed.state, needed.reason) == ("expired", "its retention ended")


def clock_now(clock: FakeClock):
    from datetime import UTC, datetime

    return datetime.fromtimestamp(clock.now, tz=UTC)


def test_users_see_runs_of_their_tenant_only(
    scheduler: Scheduler, service: ArtifactService, blobs: BlobStore, database: Database
) -> None:
    run = _submit(scheduler)
    build = lease(scheduler)
    _produce(service, blobs, build, database)
    assert service.get(run.run_id, "dist", tenant="acme").name == "dist"
    with pytest.raises(NotFound):
        service.list_run(run.run_id, tenant="other")
    with pytest.raises(NotFound):
        service.get(run.run_id, "dist", tenant="other")
    with pytest.raises(NotFound, match=r"has no artifact named 'nope' \(it has: build/dist\)"):
        service.get(run.run_id, "nope")
    with service.open_blob(service.get(run.run_id, "dist")) as reader:
        assert reader.read() == b"x" * 100
