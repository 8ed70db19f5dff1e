"""The commit protocol end to end: 16 writers of one identity with different content, readers watching.

Each writer reserves a record of the same identity, stores its own blob (half by a single put, half
by a multipart upload), marks the record uploading and commits it. The unique identity lets exactly
one commit win. Meanwhile readers look the identity up and read its blob: at every moment they see
either nothing or one whole blob that verifies, and always the same one. Real stores (file and
SeaweedFS) under real metadata (SQLite and PostgreSQL).
"""

from __future__ import annotations

import os
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
from tests.integration.metadata.helpers import reserve_entry

from kiln.errors import BlobNotFound
from kiln.metadata import entries
from kiln.metadata.db import Database
from kiln.storage import BlobStore, PartEntry, digest_bytes, open_blob_store

from .plane import make_store

WRITERS = 16
MIB = 1024 * 1024
IDENTITY = "refs/heads/main/pip/k1"


def _reserve(db: Database) -> str:
    return reserve_entry(db, IDENTITY, at=datetime.now(UTC))


def _store(store: BlobStore, index: int, data: bytes) -> None:
    digest = digest_bytes(data)
    if index % 2:
        store.put(digest, data, len(data))
        return
    part = 5 * MIB
    upload_id = store.create_upload(digest, len(data), part)
    parts = []
    for number, offset in enumerate(range(0, len(data), part), start=1):
        chunk = data[offset : offset + part]
        parts.append(PartEntry(number, len(chunk), store.upload_part(upload_id, number, chunk)))
    store.complete_upload(upload_id, parts)


@pytest.mark.parametrize("store_kind", ["file", pytest.param("s3", marks=pytest.mark.s3)])
def test_sixteen_writers_of_one_identity_leave_one_committed_record_and_readers_see_it_whole(
    store_kind: str, database_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url, options = make_store(store_kind, tmp_path, request)
    store = open_blob_store(url, **options)
    db = Database(database_url)
    # Different content per writer; the multipart ones span two parts.
    contents = [os.urandom(6 * MIB if i % 2 == 0 else 256 * 1024) for i in range(WRITERS)]
    by_digest = {digest_bytes(data): data for data in contents}
    entry_ids = [_reserve(db) for _ in range(WRITERS)]
    won: dict[int, bool] = {}
    seen: list[str] = []
    errors: list[BaseException] = []
    start = threading.Barrier(WRITERS)
    writers_done = threading.Event()

    def write(index: int) -> None:
        try:
            data = contents[index]
            digest = digest_bytes(data)
            start.wait()
            _store(store, index, data)
            with db.session() as s:
                entries.mark_uploading(s, entry_ids[index], digest=digest, size_bytes=len(data))
            with db.session() as s:
                result = entries.commit(
                    s, entry_ids[index], digest=digest, size_bytes=len(data), at=datetime.now(UTC)
                )
            won[index] = result.won
        except BaseException as exc:
            errors.append(exc)

    def read() -> None:
        while not writers_done.is_set():
            try:
                with db.read_session() as s:
                    found = entries.find_committed(s, tenant="acme", kind="cache", identity=IDENTITY)
                if found is None:
                    seen.append("nothing")
                    continue
                assert found.digest is not None
                with store.open(found.digest) as reader:  # verifies the digest at the end
                    whole = reader.readall()
                seen.append(found.digest if by_digest[found.digest] == whole else "WRONG")
            except BlobNotFound:
                seen.append("MISSING")  # a committed record whose blob is not there
            except BaseException as exc:
                errors.append(exc)
                return

    readers = [threading.Thread(target=read) for _ in range(2)]
    writers = [threading.Thread(target=write, args=(i,)) for i in range(WRITERS)]
    try:
        for thread in readers + writers:
            thread.start()
        for thread in writers:
            thread.join()
        writers_done.set()
        for thread in readers:
            thread.join()

        assert errors == []
        assert sorted(won.values()) == [False] * (WRITERS - 1) + [True]
        winner = next(i for i, w in won.items() if w)
        with db.read_session() as s:
            committed = entries.search(s, tenant="acme", kind="cache")
            assert [e.entry_id for e in committed] == [entry_ids[winner]]
            assert committed[0].digest == digest_bytes(contents[winner])
            losers = {entries.get(s, e).status for i, e in enumerate(entry_ids) if i != winner}
            assert losers == {"failed"}
        # Readers saw nothing, then the winner's blob whole, never anything else.
        shown = [s for s in seen if s != "nothing"]
        assert set(shown) <= {digest_bytes(contents[winner])}, set(shown)
        with store.open(committed[0].digest or "") as reader:
            assert reader.readall() == contents[winner]
        # Every loser's blob is stored but unreferenced: the janitor's to collect after the grace period.
        with db.read_session() as s:
            assert entries.referenced_digests(s) == {digest_bytes(contents[winner])}
        assert all(store.exists(d) for d in by_digest)
    finally:
        writers_done.set()
        db.dispose()
        store.close()
