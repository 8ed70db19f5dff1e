"""The cache quota: beyond it, each repository loses its least recently used cache entries first."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

from tests.integration.metadata.helpers import reserve_entry

from kiln.artifacts.retention import expire_entries
from kiln.metadata import entries
from kiln.metadata.db import Database

AT = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
MB = 1 << 20


def _cache(db: Database, name: str, *, repo: str = "web", size: int, used_minutes_ago: int | None,
           kind: str = "cache", retention: timedelta = timedelta(days=7)) -> str:  # fmt: skip
    """A committed entry of ``size`` bytes, committed an hour ago and restored some minutes ago."""
    committed_at = AT - timedelta(hours=1)
    entry_id = reserve_entry(
        db, f"{repo}/{name}", at=committed_at, repo=repo, kind=kind, name=name, key=name,
        scope="branch:main", expires_at=AT + retention,
    )  # fmt: skip
    digest = "sha256:" + hashlib.sha256(f"{repo}/{name}".encode()).hexdigest()
    with db.session() as s:
        entries.commit(s, entry_id, digest=digest, size_bytes=size, at=committed_at)
        if used_minutes_ago is not None:
            entries.touch(s, entry_id, at=AT - timedelta(minutes=used_minutes_ago))
    return entry_id


def _status(db: Database, entry_id: str) -> str:
    with db.session() as s:
        return entries.get(s, entry_id).status


def test_the_least_recently_used_caches_beyond_the_quota_are_evicted_per_repository(database: Database):
    recent = _cache(database, "recent", size=40 * MB, used_minutes_ago=1)
    middle = _cache(database, "middle", size=40 * MB, used_minutes_ago=10)
    never_restored = _cache(database, "never-restored", size=40 * MB, used_minutes_ago=None)  # used at commit
    oldest = _cache(database, "oldest", size=40 * MB, used_minutes_ago=30)
    other_repo = _cache(database, "big", repo="api", size=90 * MB, used_minutes_ago=120)
    artifact = _cache(database, "dist", size=500 * MB, used_minutes_ago=None, kind="artifact")
    past_retention = _cache(database, "stale", size=500 * MB, used_minutes_ago=0, retention=-timedelta(1))

    dry = expire_entries(database, now=AT, dry_run=True, cache_quota_bytes=100 * MB)
    assert {(e.name, e.reason) for e in dry.expired} == {
        ("stale", "retention"), ("oldest", "quota"), ("never-restored", "quota")
    }  # fmt: skip
    assert _status(database, oldest) == "committed"  # a dry run changes nothing

    report = expire_entries(database, now=AT, cache_quota_bytes=100 * MB)
    assert report.over_quota == 2
    statuses = {e: _status(database, e) for e in (recent, middle, never_restored, oldest, other_repo)}
    # web keeps what it used last within 100 MB (80 MB); api's one 90 MB entry fits its own quota.
    assert statuses == {
        recent: "committed", middle: "committed", never_restored: "expired", oldest: "expired",
        other_repo: "committed",
    }  # fmt: skip
    assert _status(database, artifact) == "committed"  # artifacts have retention, not a quota
    assert _status(database, past_retention) == "expired"
    # Within the quota now: a second pass evicts nothing, and no quota evicts nothing at all.
    assert expire_entries(database, now=AT, cache_quota_bytes=100 * MB).expired == []
    assert expire_entries(database, now=AT, cache_quota_bytes=None).expired == []
