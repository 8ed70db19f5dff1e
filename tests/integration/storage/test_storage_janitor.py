"""The janitor over a served control plane: expired upload sessions, orphan uploads, unreferenced blobs.

Time is moved by passing ``now`` forward; blob and upload ages come from the store's own clock.
"""

from __future__ import annotations

import base64
import hashlib
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from kiln.api.blob_models import UploadStartIn
from kiln.janitor import StorageJanitor, collect_storage_garbage
from kiln.metadata import entries
from kiln.metadata.tables import UploadSession
from kiln.scheduler import RunContext
from kiln.storage.digests import digest_bytes, digest_file
from kiln.storage.policy import BlobPolicy

from .plane import ALL_PAIRS, MIB, SMALL_PARTS, TWO_PAIRS, Plane

POLICY = BlobPolicy(transfer=SMALL_PARTS)


@pytest.fixture
def blob_policy() -> BlobPolicy:
    return POLICY


def _later(seconds: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


def _session_states(plane: Plane) -> dict[str, str]:
    with plane.cp.db.read_session() as session:
        return {row.id: row.state for row in session.scalars(select(UploadSession))}


@pytest.mark.parametrize("plane", ALL_PAIRS, indirect=True)
def test_expired_sessions_and_orphan_uploads_are_aborted(plane: Plane, tmp_path: Path) -> None:
    leased = plane.lease()
    client = plane.client()
    data = os.urandom(7 * MIB)
    digest = digest_bytes(data)
    started = client.start_blob_upload(
        leased.attempt_id, leased.lease_token, UploadStartIn(digest=digest, size_bytes=len(data))
    )
    assert started.session_id is not None and started.upload_id is not None
    part = data[: 5 * MIB]
    url = started.grants[1].url
    md5 = base64.b64encode(hashlib.md5(part).digest()).decode()
    httpx.put(
        url if "://" in url else plane.url + url, content=part, headers={"Content-MD5": md5}, timeout=30
    )
    orphan = plane.store.create_upload(digest_bytes(b"orphan" * MIB), 6 * MIB, 5 * MIB)

    db, store = plane.cp.db, plane.store
    past_lease = _later(POLICY.upload_lease_s + 60)
    # Young, or held by an attempt that still runs (past its session lease: one part can be slow).
    for now in (datetime.now(UTC), past_lease):
        report = collect_storage_garbage(db, store, POLICY, now=now)
        assert (report.sessions_aborted, report.uploads_aborted) == (0, 0)
    assert {u.upload_id for u in store.list_uploads()} == {started.upload_id, orphan}

    plane.cp.scheduler.complete_attempt(leased.attempt_id, leased.lease_token, status="failed")
    dry = collect_storage_garbage(db, store, POLICY, now=past_lease, dry_run=True)
    assert (dry.sessions_aborted, dry.uploads_aborted, dry.dry_run) == (1, 1, True)
    assert _session_states(plane) == {started.session_id: "open"}

    report = collect_storage_garbage(db, store, POLICY, now=past_lease)
    assert (report.sessions_aborted, report.uploads_aborted) == (1, 1)
    assert _session_states(plane) == {started.session_id: "aborted"}
    assert [u.upload_id for u in store.list_uploads()] == [orphan]  # no session, but still young

    report = collect_storage_garbage(db, store, POLICY, now=_later(POLICY.abandoned_upload_s + 60))
    assert (report.sessions_aborted, report.uploads_aborted) == (0, 1)
    assert list(store.list_uploads()) == []

    # Ended sessions are purged after their retention.
    purge_at = past_lease + timedelta(seconds=POLICY.session_retention_s + 60)
    report = collect_storage_garbage(db, store, POLICY, now=purge_at)
    assert report.sessions_purged == 1 and _session_states(plane) == {}


@pytest.mark.parametrize("plane", ALL_PAIRS, indirect=True)
def test_unreferenced_blobs_are_deleted_only_after_the_grace_period(plane: Plane, tmp_path: Path) -> None:
    db, store, scheduler = plane.cp.db, plane.store, plane.cp.scheduler
    leased = plane.lease()
    blobs = plane.blobs(leased, tmp_path / "spool")
    sizes = {}

    def blob(name: str, size: int) -> str:
        path = tmp_path / name
        path.write_bytes(os.urandom(size))
        digest, sizes[name] = digest_file(path)
        blobs.upload(path, digest=digest, size=size)
        return digest

    committed = blob("committed", MIB)  # an entry references it
    uploaded = blob("uploaded", 6 * MIB)  # uploaded, never referenced by an entry
    source = blob("source", MIB)  # the source snapshot of a run that has not finished
    stray = digest_bytes(b"stray")
    store.put(stray, b"stray", 5)  # put behind everybody's back
    with db.session() as session:
        entry = entries.reserve(
            session,
            tenant="acme",
            repo="web",
            scope="refs/heads/main",
            kind="cache",
            name="deps",
            key="k1",
            identity="deps/k1",
            trust_tier="protected",
            at=datetime.now(UTC),
        )
        entries.commit(
            session, entry.entry_id, digest=committed, size_bytes=sizes["committed"], at=datetime.now(UTC)
        )
    run = scheduler.submit_run(
        RunContext(tenant="acme", repo="web", ref="main"),
        workflow_name="ci",
        jobs=[("build", {"steps": [{"run": "true"}]})],
        workflow_json={"name": "ci"},
        workflow_text="name: ci\n",
        source_digest=source,
    )

    young = collect_storage_garbage(db, store, POLICY, now=datetime.now(UTC))
    assert (young.blobs_deleted, young.bytes_freed) == (0, 0)

    past_grace = _later(POLICY.blob_grace_s + 60)
    dry = collect_storage_garbage(db, store, POLICY, now=past_grace, dry_run=True)
    assert (dry.blobs_deleted, dry.bytes_freed) == (2, sizes["uploaded"] + 5)
    assert store.exists(uploaded) and store.exists(stray)

    report = collect_storage_garbage(db, store, POLICY, now=past_grace)
    assert (report.blobs_deleted, report.bytes_freed) == (2, sizes["uploaded"] + 5)
    assert [store.exists(d) for d in (committed, source, uploaded, stray)] == [True, True, False, False]

    # The run ends: its source is garbage too. The entry expires: so is its blob.
    scheduler.cancel_run(run.run_id)
    with db.session() as session:
        entries.set_status(session, [entry.entry_id], entries.EXPIRED)
    report = collect_storage_garbage(db, store, POLICY, now=past_grace)
    assert (report.blobs_deleted, report.bytes_freed) == (2, sizes["committed"] + sizes["source"])
    assert not store.exists(committed) and not store.exists(source)


@pytest.mark.parametrize("plane", TWO_PAIRS, indirect=True)
def test_a_blob_found_already_stored_is_kept_until_its_reference_can_land(
    plane: Plane, tmp_path: Path
) -> None:
    """The dedup race: an old blob, "already stored" for a new upload, whose entry commits a moment later."""
    db, store = plane.cp.db, plane.store
    digest = digest_bytes(b"old blob")
    store.put(digest, b"old blob", 8)
    (tmp_path / "old").write_bytes(b"old blob")
    past_grace = _later(POLICY.blob_grace_s + 60)
    assert collect_storage_garbage(db, store, POLICY, now=past_grace, dry_run=True).blobs_deleted == 1

    result = plane.blobs(plane.lease(), tmp_path / "spool").upload(tmp_path / "old", digest=digest, size=8)
    assert result.existed
    # The "exists" answer is recorded: the blob stays for a grace period from now, not from its birth.
    assert collect_storage_garbage(db, store, POLICY, now=_later(60)).blobs_deleted == 0
    assert store.exists(digest)
    assert (
        collect_storage_garbage(db, store, POLICY, now=_later(POLICY.blob_grace_s + 120)).blobs_deleted == 1
    )


@pytest.mark.parametrize("plane", TWO_PAIRS[:1], indirect=True)
def test_the_storage_janitor_runs_at_its_interval(plane: Plane) -> None:
    now = [0.0]
    janitor = StorageJanitor(plane.cp.db, plane.store, BlobPolicy(gc_interval_s=600), clock=lambda: now[0])
    assert janitor.tick() is None  # not at start: a short kiln run never pays for it
    now[0] = 601
    report = janitor.tick()
    assert report is not None and report.lifecycle_backstop is plane.store.capabilities.lifecycle_backstop
    now[0] = 700
    assert janitor.tick() is None
