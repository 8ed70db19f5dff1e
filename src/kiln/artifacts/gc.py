"""Garbage collection as ``kiln gc`` and the server's janitor run it: retention first, then storage.

The order matters. Expiring artifacts and cache entries past their retention is what takes their
blobs out of the referenced set; the storage collection that follows
(:func:`kiln.janitor.collect_storage_garbage`) aborts abandoned uploads and deletes blobs that no
record references once their grace period is over. A blob that another record still references
(the same bytes in a live cache entry, say) is never deleted.

A dry run reports what retention would expire and what the storage collection would do *now*; the
blobs of the entries it would expire are not counted, since they are still referenced until the
expiry is stored.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kiln.artifacts.retention import ExpiryReport, expire_entries
from kiln.janitor import StorageJanitor, StorageReport, collect_storage_garbage
from kiln.metadata.db import Database
from kiln.storage import BlobStore
from kiln.storage.policy import BlobPolicy

__all__ = ["GarbageCollector", "GcReport", "collect_garbage"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GcReport:
    """What one collection did (or, in a dry run, would do)."""

    expiry: ExpiryReport
    storage: StorageReport

    def as_dict(self) -> dict[str, Any]:
        """The report as plain JSON-able values (``kiln gc --json``)."""
        by_kind = self.expiry.by_kind
        return {
            "dry_run": self.storage.dry_run,
            "expired": {
                "artifacts": by_kind.get("artifact", 0),
                "caches": by_kind.get("cache", 0),
                "other": sum(n for kind, n in by_kind.items() if kind not in ("artifact", "cache")),
                "entries": [
                    {
                        "kind": e.kind,
                        "tenant": e.tenant,
                        "name": e.name,
                        "run_id": e.producer_run_id,
                        "job": e.producer_job,
                        "digest": e.digest,
                        "size_bytes": e.size_bytes,
                        "expires_at": e.expires_at.isoformat() if e.expires_at else None,
                        "reason": e.reason,
                    }
                    for e in self.expiry.expired
                ],
            },
            "evicted_over_quota": self.expiry.over_quota,
            "storage": self.storage.as_dict(),
        }


def collect_garbage(
    db: Database,
    store: BlobStore,
    policy: BlobPolicy | None = None,
    *,
    now: datetime | None = None,
    dry_run: bool = False,
    cache_quota_bytes: int | None = None,
) -> GcReport:
    """Expire entries past their retention, then collect storage garbage; return what was done.

    Parameters
    ----------
    db, store
        The metadata database and the blob store.
    policy
        Grace periods (``BlobPolicy()`` if None).
    now
        The current time, timezone-aware (tests move it forward instead of waiting).
    dry_run
        Report only; change nothing.
    cache_quota_bytes
        Each repository's cache quota: beyond it the least recently used entries are evicted.
    """
    now = now or datetime.now(UTC)
    expiry = expire_entries(db, now=now, dry_run=dry_run, cache_quota_bytes=cache_quota_bytes)
    storage = collect_storage_garbage(db, store, policy, now=now, dry_run=dry_run)
    report = GcReport(expiry, storage)
    logger.info(
        "Garbage collected: %d entries expired, %d uploads aborted, %d blobs deleted.",
        len(expiry.expired),
        storage.uploads_aborted,
        storage.blobs_deleted,
        extra={"action": "gc", "expired": expiry.by_kind, "dry_run": dry_run},
    )
    return report


class GarbageCollector(StorageJanitor):
    """The server's periodic collection (``JanitorLoop``): retention, then storage garbage.

    A :class:`kiln.janitor.StorageJanitor` (same interval, same first wait) whose collection
    expires entries first; ``last_gc`` holds the whole report of the latest one.
    """

    last_gc: GcReport | None = None
    cache_quota_bytes: int | None = None  # set by the server from KILN_CACHE_QUOTA

    def collect(self) -> StorageReport:
        quota = self.cache_quota_bytes
        self.last_gc = collect_garbage(self._db, self._store, self._policy, cache_quota_bytes=quota)
        return self.last_gc.storage
