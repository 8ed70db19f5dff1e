"""The janitor's primitives against real stores: abandoned uploads, unreferenced blobs, injected time."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from tests.fixtures.seaweedfs import SeaweedFS

from kiln.errors import UploadNotFound
from kiln.storage import (
    BlobStore,
    abandoned_uploads,
    abort_uploads,
    delete_unreferenced_blobs,
    open_blob_store,
    unreferenced_blobs,
)
from kiln.storage.digests import digest_bytes

MIB = 1024 * 1024
HOUR = 3600.0


@pytest.fixture(params=["memory", "file", pytest.param("s3", marks=pytest.mark.s3)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BlobStore]:
    if request.param == "memory":
        made = open_blob_store("memory://")
    elif request.param == "file":
        made = open_blob_store(f"file://{tmp_path / 'store'}")
    else:
        server: SeaweedFS = request.getfixturevalue("seaweedfs")
        made = open_blob_store(server.url(f"cleanup/{uuid.uuid4().hex[:12]}"), **server.options())
    yield made
    made.close()


def _start_upload(store: BlobStore, data: bytes) -> str:
    upload_id = store.create_upload(digest_bytes(data), len(data), 5 * MIB)
    store.upload_part(upload_id, 1, data[: 5 * MIB])
    return upload_id


def test_abandoned_uploads_are_found_only_when_old_and_not_live(store: BlobStore) -> None:
    now = datetime.now(UTC)
    stale = _start_upload(store, os.urandom(6 * MIB))
    live = _start_upload(store, os.urandom(6 * MIB))

    assert abandoned_uploads(store, older_than_s=4 * HOUR, now=now) == []  # too young
    later = now + timedelta(hours=5)
    found = abandoned_uploads(store, older_than_s=4 * HOUR, now=later, live_upload_ids={live})
    assert [u.upload_id for u in found] == [stale]

    assert abort_uploads(store, found, dry_run=True) == 1
    assert {u.upload_id for u in store.list_uploads()} == {stale, live}  # a dry run changes nothing
    assert abort_uploads(store, found) == 1

    assert [u.upload_id for u in store.list_uploads()] == [live]
    with pytest.raises(UploadNotFound):
        store.list_parts(stale)
    assert len(store.list_parts(live)) == 1
    assert abort_uploads(store, found) == 1  # aborting again is harmless
    store.abort_upload(live)


def test_unreferenced_blobs_go_only_after_the_grace_period(store: BlobStore) -> None:
    kept, orphan, vetoed = (digest_bytes(d) for d in (b"referenced", b"orphan", b"re-referenced"))
    for digest, data in ((kept, b"referenced"), (orphan, b"orphan"), (vetoed, b"re-referenced")):
        store.put(digest, data, len(data))
    now = datetime.now(UTC)

    # Inside the grace period nothing is even a candidate, referenced or not.
    assert unreferenced_blobs(store, {kept}, grace_s=24 * HOUR, now=now) == []
    assert delete_unreferenced_blobs(store, {kept}, grace_s=24 * HOUR, now=now) == []

    later = now + timedelta(hours=25)
    candidates = {b.digest for b in unreferenced_blobs(store, {kept}, grace_s=24 * HOUR, now=later)}
    assert candidates == {orphan, vetoed}
    assert [b.digest for b in delete_unreferenced_blobs(store, {kept}, 24 * HOUR, later, dry_run=True)]
    assert {b.digest for b in store.list_blobs()} == {kept, orphan, vetoed}

    # The janitor's last-moment lookup can still save a blob a writer just deduplicated onto.
    deleted = delete_unreferenced_blobs(
        store, {kept}, grace_s=24 * HOUR, now=later, still_unreferenced=lambda digest: digest != vetoed
    )

    assert [b.digest for b in deleted] == [orphan]
    assert {b.digest for b in store.list_blobs()} == {kept, vetoed}
