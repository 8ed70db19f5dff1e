"""Storage garbage collection: abandoned uploads and blobs that nothing references.

:func:`collect_storage_garbage` is the one entry point, called by the server's janitor loop (every
``BlobPolicy.gc_interval_s``) and by ``kiln gc``. It returns a :class:`StorageReport`; callers that
clean up more (expiring artifacts and cache entries first, which is what turns their blobs into
garbage) add their own counts next to it.

In order:

1. **Expired upload sessions.** An open session whose lease expired and whose attempt no longer
   runs is marked ``aborted`` (a guarded update: a session resumed meanwhile is left alone), then
   its multipart upload is aborted in the store.
2. **Uploads nobody knows.** Multipart uploads (and, on the file backend, staging directories of
   puts) older than ``abandoned_upload_s`` that no open session holds: a control plane that died
   between creating an upload and recording it, or a session whose store abort failed.
3. **Unreferenced blobs.** Blobs older than ``blob_grace_s`` that no entry (pending, uploading,
   committed), no source snapshot of an unfinished run and no open or recently ended upload session
   references. Each is looked up again right before it is deleted.
4. **Ended sessions** older than ``session_retention_s`` are purged.

``dry_run`` reports what would be done and changes nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta

from kiln.errors import KilnError
from kiln.metadata import uploads
from kiln.metadata.db import Database
from kiln.scheduler.attempt_states import AttemptState
from kiln.scheduler.run_states import FINAL_STATES as FINAL_RUN_STATES
from kiln.scheduler.run_states import RunState
from kiln.storage import BlobStore, UploadEntry, abandoned_uploads, abort_uploads, delete_unreferenced_blobs
from kiln.storage.policy import BlobPolicy

__all__ = ["StorageJanitor", "StorageReport", "collect_storage_garbage"]

logger = logging.getLogger(__name__)

_UNFINISHED_RUNS = tuple(state.value for state in RunState if state not in FINAL_RUN_STATES)


@dataclass(frozen=True)
class StorageReport:
    """What one collection did (or, with ``dry_run``, would do)."""

    sessions_aborted: int  # expired upload sessions ended
    uploads_aborted: int  # multipart uploads aborted in the store (the sessions' and orphans)
    blobs_deleted: int
    bytes_freed: int
    sessions_purged: int  # ended sessions past their retention, deleted
    lifecycle_backstop: bool | None  # the store's abort-incomplete-uploads rule (None: not S3)
    dry_run: bool

    def as_dict(self) -> dict[str, int | bool | None]:
        """The report as plain JSON-able values."""
        return asdict(self)


def collect_storage_garbage(
    db: Database,
    store: BlobStore,
    policy: BlobPolicy | None = None,
    *,
    now: datetime | None = None,
    dry_run: bool = False,
) -> StorageReport:
    """Abort abandoned uploads, delete unreferenced blobs past the grace period; return what was done.

    Parameters
    ----------
    db, store
        The metadata database and the blob store.
    policy
        Grace periods and retention (``BlobPolicy()`` if None).
    now
        The current time (timezone-aware); tests move it forward instead of waiting. Blob and
        upload ages are compared with the store's own timestamps.
    dry_run
        Report only.
    """
    policy = policy or BlobPolicy()
    now = now or datetime.now(UTC)

    sessions_aborted, session_uploads = _abort_expired_sessions(db, store, now, dry_run)
    with db.read_session() as session:
        live = uploads.live_upload_ids(session)
    orphans = abandoned_uploads(store, policy.abandoned_upload_s, now, live_upload_ids=live)
    orphans_aborted = abort_uploads(store, orphans, dry_run=dry_run)

    recent_since = now - timedelta(seconds=policy.blob_grace_s)
    with db.read_session() as session:
        referenced = uploads.referenced_digests(
            session, recent_since=recent_since, unfinished_run_states=_UNFINISHED_RUNS
        )

    def still_unreferenced(digest: str) -> bool:
        # A fresh look right before the delete: a writer may have referenced the blob since.
        with db.read_session() as session:
            return not uploads.digest_is_referenced(
                session, digest, recent_since=recent_since, unfinished_run_states=_UNFINISHED_RUNS
            )

    deleted = delete_unreferenced_blobs(
        store,
        referenced,
        policy.blob_grace_s,
        now,
        still_unreferenced=still_unreferenced,
        dry_run=dry_run,
    )

    purged = 0
    if not dry_run:
        with db.session() as session:
            purged = uploads.purge_finished(
                session, before=now - timedelta(seconds=policy.session_retention_s)
            )

    report = StorageReport(
        sessions_aborted=sessions_aborted,
        uploads_aborted=session_uploads + orphans_aborted,
        blobs_deleted=len(deleted),
        bytes_freed=sum(blob.size_bytes for blob in deleted),
        sessions_purged=purged,
        lifecycle_backstop=store.capabilities.lifecycle_backstop,
        dry_run=dry_run,
    )
    logger.info("Storage garbage collected.", extra={"action": "storage_gc", **report.as_dict()})
    return report


def _abort_expired_sessions(db: Database, store: BlobStore, now: datetime, dry_run: bool) -> tuple[int, int]:
    """Return ``(sessions ended, store uploads aborted)``."""
    with db.read_session() as session:
        expired = uploads.expired_sessions(session, now=now, running_state=AttemptState.RUNNING)
    if dry_run:
        return len(expired), sum(1 for record in expired if record.upload_id is not None)
    ended = aborted = 0
    for record in expired:
        # The database first: once the session is aborted nobody can resume it, so aborting its
        # upload cannot pull the parts from under a new holder.
        with db.session() as session:
            if not uploads.abandon(session, record, now=now, running_state=AttemptState.RUNNING):
                continue
        ended += 1
        if record.upload_id is not None:
            # If this fails the upload is an orphan, and step 2 of a later collection aborts it.
            aborted += abort_uploads(store, [UploadEntry(record.upload_id, record.digest, record.created_at)])
    return ended, aborted


class StorageJanitor:
    """Runs :func:`collect_storage_garbage` from the janitor loop, at most every ``gc_interval_s``.

    The first collection waits one interval: a short-lived ``kiln run`` never pays for listing the
    store.
    """

    def __init__(
        self,
        db: Database,
        store: BlobStore,
        policy: BlobPolicy | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._db = db
        self._store = store
        self._policy = policy or BlobPolicy()
        self._clock = clock
        self._next = clock() + self._policy.gc_interval_s
        self.last_report: StorageReport | None = None

    def tick(self) -> StorageReport | None:
        """Collect if the interval has passed; return the report, or None if it was not time."""
        if self._clock() < self._next:
            return None
        self._next = self._clock() + self._policy.gc_interval_s
        try:
            self.last_report = self.collect()
        except KilnError as exc:  # the store or the database is away: try again next interval
            logger.warning("storage garbage collection failed: %s", exc)
            return None
        return self.last_report

    def collect(self) -> StorageReport:
        """One collection now (a subclass may do more first: ``kiln.artifacts.gc`` expires entries)."""
        return collect_storage_garbage(self._db, self._store, self._policy)
