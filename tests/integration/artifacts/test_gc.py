"""``kiln gc``'s work on a real store and database: retention first, then storage garbage.

Abandoned multipart uploads are aborted, expired artifacts lose their blobs, and a blob that any
live record still references is never deleted, whatever expired around it.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from tests.fixtures.seaweedfs import SeaweedFS
from tests.integration.artifacts.harness import upload_as
from tests.integration.metadata.helpers import FakeClock, complete, lease

from kiln.artifacts import wire
from kiln.artifacts.gc import GarbageCollector, collect_garbage
from kiln.artifacts.service import ArtifactService
from kiln.metadata.db import Database
from kiln.scheduler import LeasedJob, RunContext, Scheduler
from kiln.storage import BlobStore, open_blob_store
from kiln.storage.policy import BlobPolicy

MIB = 1024 * 1024
# Everything is old enough at once: the test moves `now` an hour ahead instead of waiting.
QUICK = BlobPolicy(
    upload_lease_s=60, blob_grace_s=60, abandoned_upload_s=60, session_retention_s=60, gc_interval_s=1
)


@pytest.fixture(params=["file", pytest.param("s3", marks=pytest.mark.s3)])
def store(request: pytest.FixtureRequest, tmp_path) -> Iterator[BlobStore]:
    if request.param == "file":
        found = open_blob_store((tmp_path / "storage").as_uri())
    else:
        weed: SeaweedFS = request.getfixturevalue("seaweedfs")
        found = open_blob_store(weed.url(f"gc-{uuid.uuid4().hex[:12]}"), **weed.options())
    yield found
    found.close()


def _submit(scheduler: Scheduler, artifacts: list[dict]) -> None:
    scheduler.submit_run(
        RunContext(tenant="acme", repo="web", ref="main"),
        workflow_name="ci",
        jobs=[("build", {"steps": [{"run": "make"}], "artifacts": artifacts})],
        workflow_json={"name": "ci"},
        workflow_text="name: ci\n",
        source_digest="sha256:" + "0" * 64,
    )


def _commit(
    service: ArtifactService, db: Database, store: BlobStore, job: LeasedJob, name: str, data: bytes
) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    body = wire.ArtifactReserveIn(name=name, digest=digest, size_bytes=len(data), files=1, unpacked_bytes=1)
    reserved = service.reserve(job.attempt_id, job.lease_token, body)
    upload_as(db, store, job, data)
    final = wire.ArtifactFinalizeIn(digest=digest, size_bytes=len(data))
    service.finalize(job.attempt_id, job.lease_token, reserved.artifact_id, final)
    return digest


def test_gc_expires_artifacts_frees_their_blobs_and_keeps_what_is_referenced(
    database: Database, store: BlobStore
) -> None:
    clock = FakeClock(time.time())
    scheduler = Scheduler(database, clock=clock)
    service = ArtifactService(database, store, clock=clock)
    shared = b"the same bytes in two artifacts"
    _submit(
        scheduler,
        [
            {"name": "short", "paths": ["a"], "retention_s": 60.0},
            {"name": "shared", "paths": ["b"], "retention_s": 60.0},
        ],
    )
    first = lease(scheduler)
    short = _commit(service, database, store, first, "short", b"only here")
    _commit(service, database, store, first, "shared", shared)
    complete(scheduler, first)
    _submit(scheduler, [{"name": "kept", "paths": ["a"], "retention_s": 30 * 86400.0}])
    second = lease(scheduler)
    kept = _commit(service, database, store, second, "kept", shared)  # the same blob, a long retention
    complete(scheduler, second)
    # A runner died halfway through an upload nobody will resume.
    orphan_digest = "sha256:" + hashlib.sha256(b"never finished").hexdigest()
    orphan = store.create_upload(orphan_digest, 12 * MIB, 5 * MIB)
    store.upload_part(orphan, 1, b"x" * 5 * MIB)

    later = datetime.now(UTC) + timedelta(hours=1)
    dry = collect_garbage(database, store, QUICK, now=later, dry_run=True)
    assert sorted(e.name for e in dry.expiry.expired) == ["shared", "short"]
    assert store.exists(short) and [u.upload_id for u in store.list_uploads()] == [orphan]

    report = collect_garbage(database, store, QUICK, now=later)
    assert report.expiry.by_kind == {"artifact": 2}
    assert report.storage.uploads_aborted == 1 and list(store.list_uploads()) == []
    assert not store.exists(short)  # expired and referenced by nothing: gone
    assert store.exists(kept)  # expired in one run, committed in another: kept
    assert report.storage.blobs_deleted == 1 and report.storage.bytes_freed == len(b"only here")
    data = report.as_dict()
    assert data["expired"]["artifacts"] == 2 and data["storage"]["blobs_deleted"] == 1
    # Collected again, nothing more to do.
    again = collect_garbage(database, store, QUICK, now=later)
    assert (again.expiry.expired, again.storage.blobs_deleted, again.storage.uploads_aborted) == ([], 0, 0)


def test_the_server_loop_collects_at_its_interval(database: Database, store: BlobStore) -> None:
    ticks = FakeClock(0.0)
    collector = GarbageCollector(database, store, QUICK, clock=ticks)
    assert collector.tick() is None  # the first collection waits one interval
    ticks.advance(1.5)
    report = collector.tick()
    assert report is not None and report is collector.last_report and not report.dry_run
    assert collector.last_gc is not None and collector.last_gc.storage is report
    assert collector.tick() is None
