"""Cleanup primitives for the janitor: abandoned uploads and unreferenced blobs.

The janitor decides *what* is referenced (from the database); these functions only look at the
store. Time is passed in (``now``), so tests move it instead of waiting.

The race to keep in mind for blobs: a writer may find a blob already stored (deduplication) and
commit a reference to it *after* the janitor computed ``referenced``. Two defences, both needed:
the grace period (a blob younger than ``grace_s`` is never a candidate; make it longer than the
longest upload session), and ``still_unreferenced``, which the janitor should implement as a fresh
database lookup made right before each delete.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Container, Iterable
from datetime import datetime, timedelta

from kiln.errors import UploadNotFound
from kiln.storage.base import BlobEntry, BlobStore, UploadEntry

__all__ = ["abandoned_uploads", "abort_uploads", "delete_unreferenced_blobs", "unreferenced_blobs"]

logger = logging.getLogger(__name__)

_ABORT_ROUNDS = 3


def abandoned_uploads(
    store: BlobStore,
    older_than_s: float,
    now: datetime,
    *,
    live_upload_ids: Container[str] = frozenset(),
) -> list[UploadEntry]:
    """Return uploads initiated more than ``older_than_s`` before ``now`` and not known to be live.

    Parameters
    ----------
    store
        The blob store.
    older_than_s
        Minimum age; longer than any healthy upload (GitLab uses 4 h, MinIO 24 h).
    now
        The current time, timezone-aware.
    live_upload_ids
        Upload ids whose session still holds a lease in the database: never abandoned.
    """
    cutoff = now - timedelta(seconds=older_than_s)
    return [
        upload
        for upload in store.list_uploads()
        if upload.initiated_at <= cutoff and upload.upload_id not in live_upload_ids
    ]


def abort_uploads(store: BlobStore, uploads: Iterable[UploadEntry], *, dry_run: bool = False) -> int:
    """Abort each upload and confirm it is gone; return how many were aborted (or would be).

    S3 warns that a part upload in flight during an abort may still land, so an upload is aborted
    again until ListParts reports it gone (a few rounds at most).
    """
    count = 0
    for upload in uploads:
        count += 1
        if dry_run:
            continue
        for _ in range(_ABORT_ROUNDS):
            store.abort_upload(upload.upload_id)
            try:
                store.list_parts(upload.upload_id)
            except UploadNotFound:
                break
        logger.info(
            "Aborted an abandoned upload.",
            extra={"action": "upload_aborted", "upload_id": upload.upload_id, "digest": upload.digest},
        )
    return count


def unreferenced_blobs(
    store: BlobStore, referenced: Container[str], grace_s: float, now: datetime
) -> list[BlobEntry]:
    """Return blobs not in ``referenced`` and last modified more than ``grace_s`` before ``now``."""
    cutoff = now - timedelta(seconds=grace_s)
    return [
        blob for blob in store.list_blobs() if blob.modified_at <= cutoff and blob.digest not in referenced
    ]


def delete_unreferenced_blobs(
    store: BlobStore,
    referenced: Container[str],
    grace_s: float,
    now: datetime,
    *,
    still_unreferenced: Callable[[str], bool] | None = None,
    dry_run: bool = False,
) -> list[BlobEntry]:
    """Delete the blobs :func:`unreferenced_blobs` finds; return what was (or would be) deleted.

    Parameters
    ----------
    still_unreferenced
        Asked right before each delete; return False to keep the blob (see the module docstring).
    dry_run
        Report only; delete nothing.
    """
    deleted = []
    for blob in unreferenced_blobs(store, referenced, grace_s, now):
        if still_unreferenced is not None and not still_unreferenced(blob.digest):
            continue
        if not dry_run:
            store.delete(blob.digest)
            logger.info(
                "Deleted an unreferenced blob.",
                extra={"action": "blob_deleted", "digest": blob.digest, "size_bytes": blob.size_bytes},
            )
        deleted.append(blob)
    return deleted
