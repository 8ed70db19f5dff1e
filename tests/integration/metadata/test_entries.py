"""The commit protocol's records: reserve, upload, create-only commit, visibility, expiry."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from tests.integration.metadata.helpers import reserve_entry

from kiln.errors import Conflict
from kiln.metadata import entries
from kiln.metadata.db import Database

AT = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def _digest(n: int) -> str:
    return "sha256:" + f"{n:x}".rjust(64, "0")


def _reserve(db: Database, identity: str = "scope/pip/k1", *, at: datetime = AT, **extra: object) -> str:
    return reserve_entry(db, identity, at=at, **extra)


def test_an_entry_is_invisible_until_committed_and_then_immutable(database: Database) -> None:
    entry_id = _reserve(database)
    with database.session() as s:
        assert entries.find_committed(s, tenant="acme", kind="cache", identity="scope/pip/k1") is None
        assert entries.search(s, tenant="acme", kind="cache") == []
        entries.mark_uploading(s, entry_id, digest=_digest(1), size_bytes=10)
        result = entries.commit(s, entry_id, digest=_digest(1), size_bytes=10, at=AT, compression="zstd")
    assert result.won and result.entry.status == "committed"
    with database.session() as s:
        found = entries.find_committed(s, tenant="acme", kind="cache", identity="scope/pip/k1")
        assert found is not None and found.digest == _digest(1) and found.compression == "zstd"
        # Committing again with the same blob is idempotent; with another blob it is refused.
        assert entries.commit(s, entry_id, digest=_digest(1), size_bytes=10, at=AT).won
        with pytest.raises(Conflict):
            entries.commit(s, entry_id, digest=_digest(2), size_bytes=10, at=AT)
        with pytest.raises(Conflict):
            entries.mark_uploading(s, entry_id, digest=_digest(2), size_bytes=10)


def test_the_second_committer_of_an_identity_loses_and_keeps_nothing(database: Database) -> None:
    first, second = _reserve(database), _reserve(database)
    with database.session() as s:
        assert entries.commit(s, first, digest=_digest(1), size_bytes=1, at=AT).won
    with database.session() as s:
        lost = entries.commit(s, second, digest=_digest(2), size_bytes=2, at=AT)
        # The losing statement is undone, not the transaction: the session is still usable.
        assert entries.get(s, second).status == "failed"
    assert not lost.won
    assert lost.entry.entry_id == first and lost.entry.digest == _digest(1)
    with database.session() as s:
        assert entries.get(s, second).failure == "lost-race"
        assert [e.entry_id for e in entries.search(s, tenant="acme", kind="cache")] == [first]


def test_concurrent_committers_of_one_identity_have_exactly_one_winner(database: Database) -> None:
    ids = [_reserve(database) for _ in range(8)]
    outcomes: dict[str, bool] = {}
    barrier = threading.Barrier(len(ids))

    def commit(index: int, entry_id: str) -> None:
        barrier.wait()
        with database.session() as s:
            outcomes[entry_id] = entries.commit(s, entry_id, digest=_digest(index), size_bytes=1, at=AT).won

    threads = [threading.Thread(target=commit, args=(i, e)) for i, e in enumerate(ids)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes.values()) == [False] * 7 + [True]
    with database.session() as s:
        committed = entries.search(s, tenant="acme", kind="cache")
        assert len(committed) == 1 and outcomes[committed[0].entry_id]
        assert {entries.get(s, e).status for e in ids} == {"committed", "failed"}


def test_search_returns_the_newest_commit_first(database: Database) -> None:
    old, new = _reserve(database, "a"), _reserve(database, "b")
    with database.session() as s:
        entries.commit(s, old, digest=_digest(1), size_bytes=1, at=AT)
        entries.commit(s, new, digest=_digest(2), size_bytes=1, at=AT + timedelta(minutes=1))
        assert [e.entry_id for e in entries.search(s, tenant="acme", kind="cache", name="pip")] == [new, old]
        assert entries.search(s, tenant="acme", kind="cache", scopes=["refs/heads/other"]) == []
        assert entries.search(s, tenant="acme", kind="artifact") == []


def test_expiry_hides_entries_and_releases_their_blobs(database: Database) -> None:
    keep = _reserve(database, "keep", expires_at=AT + timedelta(days=7))
    due = _reserve(database, "due", expires_at=AT + timedelta(hours=1))
    open_ = _reserve(database, "open")
    with database.session() as s:
        entries.commit(s, keep, digest=_digest(1), size_bytes=1, at=AT)
        entries.commit(s, due, digest=_digest(2), size_bytes=1, at=AT)
        entries.mark_uploading(s, open_, digest=_digest(3), size_bytes=1)
    with database.session() as s:
        expired = entries.expire_due(s, now=AT + timedelta(hours=2))
    assert [e.entry_id for e in expired] == [due]
    with database.session() as s:
        assert [e.entry_id for e in entries.search(s, tenant="acme", kind="cache")] == [keep]
        assert entries.get(s, due).status == "expired"
        # The uploading entry's blob is about to be committed: the janitor must keep it too.
        assert entries.referenced_digests(s) == {_digest(1), _digest(3)}
        assert entries.expire_due(s, now=AT + timedelta(hours=2)) == []
