"""Where an uploader writes down a multipart upload, so that another process can resume it.

The record is written right after CreateMultipartUpload and *before* any part is sent, and
removed after Complete. Which parts made it is not recorded here: ListParts on the server is the
truth, and each listed part is accepted only if its size and ETag match the local bytes.

``JsonFileJournal`` keeps one small JSON file per blob in a spool directory (the runner's local
disk, next to the spooled archive). The control plane will provide a database-backed journal
implementing the same Protocol.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

from kiln.storage.digests import digest_to_hex
from kiln.storage.fsutil import fsync_dir, write_atomic

__all__ = ["JsonFileJournal", "UploadJournal", "UploadRecord"]


@dataclass(frozen=True)
class UploadRecord:
    """One multipart upload in progress."""

    digest: str
    size_bytes: int
    part_size_bytes: int
    upload_id: str
    created_at: float  # Unix seconds, from the uploader's clock


class UploadJournal(Protocol):
    """Durable memory of uploads in progress, keyed by blob digest."""

    def load(self, digest: str) -> UploadRecord | None:
        """Return the record for ``digest``, or None."""
        ...

    def save(self, record: UploadRecord) -> None:
        """Durably record an upload (replacing any earlier record for the digest)."""
        ...

    def delete(self, digest: str) -> None:
        """Forget the upload for ``digest`` (no error if there is none)."""
        ...


class JsonFileJournal:
    """An ``UploadJournal`` of ``<spool_dir>/<hex>.upload.json`` files, each replaced atomically."""

    def __init__(self, spool_dir: str | os.PathLike[str], *, fsync: bool = True) -> None:
        self.spool_dir = Path(spool_dir)
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        self._fsync = fsync

    def load(self, digest: str) -> UploadRecord | None:
        """Return the record, or None if there is none or it is unreadable (then start afresh)."""
        try:
            data = json.loads(self._path(digest).read_bytes())
            record = UploadRecord(**data)
        except FileNotFoundError:
            return None
        except (ValueError, TypeError):
            return None  # a torn or foreign file: a fresh upload is always safe
        return record if record.digest == digest else None

    def save(self, record: UploadRecord) -> None:
        """Write the record atomically (temp file, fsync, rename, fsync dir)."""
        write_atomic(self._path(record.digest), json.dumps(asdict(record)).encode(), fsync=self._fsync)

    def delete(self, digest: str) -> None:
        """Remove the record file."""
        with contextlib.suppress(FileNotFoundError):
            self._path(digest).unlink()
            if self._fsync:
                fsync_dir(self.spool_dir)

    def _path(self, digest: str) -> Path:
        return self.spool_dir / f"{digest_to_hex(digest)}.upload.json"
