"""Retention: artifacts and cache entries past their ``expires_at`` are expired, in one statement.

Readers already treat a committed row past its retention as expired (see
:mod:`kiln.artifacts.service`), so expiry is invisible at once; this step stores it, which takes
the row's blob out of the referenced set: the janitor's blob sweep deletes it after its grace
period, unless another row still references the same bytes.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

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


@dataclass(frozen=True)
class ExpiryReport:
    expired: list[ExpiredEntry] = field(default_factory=list)
    dry_run: bool = False

    @property
    def by_kind(self) -> dict[str, int]:
        """How many entries of each kind expired."""
        return dict(Counter(e.kind for e in self.expired))


class _Rollback(Exception):
    """Ends a dry run's transaction without committing what it found."""


def expire_entries(db: Database, *, now: datetime, dry_run: bool = False, batch: int = 1000) -> ExpiryReport:
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

    Returns
    -------
    ExpiryReport
        Every entry expired (or that would be), oldest retention first.
    """
    found: list[ExpiredEntry] = []
    while True:
        try:
            with db.session() as session:
                due = [_expired(e) for e in entries.expire_due(session, now=now, limit=batch)]
                if dry_run:
                    raise _Rollback()
        except _Rollback:
            return ExpiryReport(due, dry_run=True)
        found += due
        if len(due) < batch:
            return ExpiryReport(found)


def _expired(entry: entries.EntryRecord) -> ExpiredEntry:
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
    )
