"""Where kiln keeps its state, and the environment variables that move it.

``KILN_HOME`` (default ``~/.kiln``) holds the embedded control plane's SQLite database and file blob
store, and the runner's scratch space. ``KILN_DATABASE_URL`` and ``KILN_STORAGE_URL`` point the
control plane at PostgreSQL and S3 instead; they are read here and nowhere else.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from kiln.errors import UsageError
from kiln.spec.units import parse_size
from kiln.storage.policy import BlobPolicy

__all__ = [
    "DEFAULT_CACHE_QUOTA",
    "Paths",
    "blob_policy",
    "cache_quota_bytes",
    "database_url",
    "kiln_home",
    "storage_url",
]


def kiln_home() -> Path:
    return Path(os.environ.get("KILN_HOME") or Path.home() / ".kiln").expanduser().absolute()


@dataclass(frozen=True)
class Paths:
    """The layout of a KILN_HOME; every component asks here instead of joining paths itself."""

    home: Path

    @property
    def database(self) -> Path:
        return self.home / "kiln.db"

    @property
    def blobs(self) -> Path:
        return self.home / "storage"

    @property
    def runner(self) -> Path:
        """The runner's own state: sandbox scratch, the source cache, upload spools."""
        return self.home / "runner"

    def ensure(self) -> Paths:
        for path in (self.home, self.blobs, self.runner):
            path.mkdir(parents=True, exist_ok=True)
        return self


def database_url(paths: Paths) -> str:
    return os.environ.get("KILN_DATABASE_URL") or f"sqlite:///{paths.database}"


def storage_url(paths: Paths) -> str:
    return os.environ.get("KILN_STORAGE_URL") or paths.blobs.as_uri()


def blob_policy() -> BlobPolicy:
    """Grant, upload-session and janitor timings: ``KILN_GRANT_TTL_S``, ``KILN_UPLOAD_LEASE_S``,
    ``KILN_BLOB_GRACE_S``, ``KILN_ABANDONED_UPLOAD_S``, ``KILN_UPLOAD_SESSION_RETENTION_S``,
    ``KILN_GC_INTERVAL_S`` (seconds; unset means the default)."""
    return BlobPolicy.from_env(os.environ)


# Like GitHub Actions' 10 GB per repository: enough for a few toolchains' dependency and compiler
# caches, small enough that a repository that saves a new tree on every push cannot fill a bucket.
DEFAULT_CACHE_QUOTA = "10g"


def cache_quota_bytes() -> int | None:
    """The committed cache bytes each repository may keep: ``KILN_CACHE_QUOTA`` (a size like
    ``10g`` or ``500m``; ``none`` for no quota; unset means 10 GiB). Beyond it the janitor evicts
    the least recently used entries."""
    raw = os.environ.get("KILN_CACHE_QUOTA", "").strip() or DEFAULT_CACHE_QUOTA
    if raw.lower() == "none":
        return None
    try:
        return parse_size(raw)
    except ValueError as exc:
        raise UsageError(f"KILN_CACHE_QUOTA={raw!r}: {exc}") from None
