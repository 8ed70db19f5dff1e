"""Counts of what the control plane holds, for its metrics: one grouped query per table.

Each query is a ``GROUP BY`` over a status column, so a scrape costs a few index or table scans
whatever the number of tenants; nothing here is per tenant (tenant names never become metric
labels: they would leak between tenants and make the series unbounded).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from kiln.metadata.tables import Attempt, Entry, Job, Run, Runner, UploadSession

__all__ = ["PlaneStats", "plane_stats"]


@dataclass(frozen=True)
class PlaneStats:
    """What a metrics scrape reports; each mapping is status → count (or bytes)."""

    runs: dict[str, int] = field(default_factory=dict)
    jobs: dict[str, int] = field(default_factory=dict)
    attempts: dict[str, int] = field(default_factory=dict)
    entries: dict[tuple[str, str], int] = field(default_factory=dict)  # (kind, status) → rows
    entry_bytes: dict[tuple[str, str], int] = field(default_factory=dict)  # (kind, status) → bytes
    upload_sessions: dict[str, int] = field(default_factory=dict)
    runners_seen: int = 0


def _by_status(session: Session, column: InstrumentedAttribute[str]) -> dict[str, int]:
    return {status: count for status, count in session.execute(select(column, func.count()).group_by(column))}


def plane_stats(session: Session, *, now: datetime, runner_window: timedelta) -> PlaneStats:
    """Counts by status of runs, jobs, attempts, entries and upload sessions, and live runners.

    ``runner_window``: a runner seen within it counts as live (it polls or heartbeats far more often).
    """
    entries: dict[tuple[str, str], int] = {}
    entry_bytes: dict[tuple[str, str], int] = {}
    grouped = select(Entry.kind, Entry.status, func.count(), func.coalesce(func.sum(Entry.size_bytes), 0))
    for kind, status, count, size in session.execute(grouped.group_by(Entry.kind, Entry.status)):
        entries[(kind, status)] = count
        entry_bytes[(kind, status)] = int(size)
    runners = session.scalar(select(func.count()).where(Runner.last_seen >= now - runner_window)) or 0
    return PlaneStats(
        runs=_by_status(session, Run.status),
        jobs=_by_status(session, Job.status),
        attempts=_by_status(session, Attempt.status),
        entries=entries,
        entry_bytes=entry_bytes,
        upload_sessions=_by_status(session, UploadSession.state),
        runners_seen=runners,
    )
