"""Retention: artifacts and cache entries past their ``expires_at`` are expired, in one statement;
then, with a cache quota, the least recently used cache entries beyond each repository's quota.

Readers already treat a committed row past its retention as expired (see
:mod:`kiln.artifacts.service`), so expiry is invisible at once; this step stores it, which takes
the row's blob out of the referenced set: the janitor's blob sweep deletes it after its grace
period, unless another row still references the same bytes.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial

from sqlalchemy.orm import Session

from kiln.metadata import entries
from kiln.metadata.db import Database

__all__ = ["ExpiredEntry", "ExpiryReport", "expire_entries"]


@dataclass(frozen=True)
class ExpiredEntry:
    entry_id: str
    tenant: str
    kind: str  # "artifact" | "cache" | "layer"
    name: str
    digest: str | None
    size_bytes: int | None
    expires_at: datetime | None
    producer_run_id: str | None
    producer_job: str | None
    reason: str = "retention"  # or "quota": evicted, least recently used, beyond its repository's quota


@dataclass(frozen=True)
class ExpiryReport:
    expired: list[ExpiredEntry] = field(default_factory=list)
    dry_run: bool = False

    @property
    def by_kind(self) -> dict[str, int]:
        """How many entries of each kind expired."""
        return dict(Counter(e.kind for e in self.expired))

    @property
    def over_quota(self) -> int:
        """How many cache entries were evicted to bring a repository under its quota."""
        return sum(e.reason == "quota" for e in self.expired)


class _Rollback(Exception):
    """Ends a dry run's transaction without committing what it found."""


def expire_entries(
    db: Database,
    *,
    now: datetime,
    dry_run: bool = False,
    batch: int = 1000,
    cache_quota_bytes: int | None = None,
) -> ExpiryReport:
    """Expire every committed entry (any kind) whose retention ended at or before ``now``.

    Parameters
    ----------
    db
        The metadata database.
    now
        The current time, timezone-aware.
    dry_run
        Report what would expire; change nothing.
    batch
        Rows per transaction (the work is repeated until none is left).
    cache_quota_bytes
        Then evict cache entries, least recently used first, until each repository's committed
        caches fit in this many bytes (None: no quota).

    Returns
    -------
    ExpiryReport
        Every entry expired (or that would be): retention first, oldest first; then evictions.
    """
    passes: list[tuple[str, Callable[[Session], list[entries.EntryRecord]]]] = [
        ("retention", partial(entries.expire_due, now=now, limit=batch))
    ]
    if cache_quota_bytes is not None:
        # Entries past their retention are not counted against the quota (the first pass takes them).
        quota = cache_quota_bytes
        evict = partial(entries.evict_over_quota, kind="cache", quota_bytes=quota, now=now, limit=batch)
        passes.append(("quota", evict))
    found: list[ExpiredEntry] = []
    for reason, one_pass in passes:
        while True:  # a transaction per batch; a dry run looks at the first batch and rolls it back
            due: list[ExpiredEntry] = []
            with contextlib.suppress(_Rollback), db.session() as session:
                due = [_expired(e, reason) for e in one_pass(session)]
                if dry_run:
                    raise _Rollback()
            found += due
            if dry_run or len(due) < batch:
                break
    return ExpiryReport(found, dry_run=dry_run)


def _expired(entry: entries.EntryRecord, reason: str) -> ExpiredEntry:
    return ExpiredEntry(
        entry_id=entry.entry_id,
        tenant=entry.tenant,
        kind=entry.kind,
        name=entry.name,
        digest=entry.digest,
        size_bytes=entry.size_bytes,
        expires_at=entry.expires_at,
        producer_run_id=entry.producer_run_id,
        producer_job=entry.producer_job,
        reason=reason,
    )
