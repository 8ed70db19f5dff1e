"""The control plane's parts, held together for the HTTP layer.

One object per server process: the scheduler (over the metadata database), the blob store, and
the secrets of runs in flight. Route handlers receive it through FastAPI's dependency injection.
"""

from __future__ import annotations

import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

from kiln import config
from kiln.metadata.db import Database
from kiln.scheduler import Scheduler
from kiln.storage import BlobStore, open_blob_store
from kiln.storage.policy import BlobPolicy

__all__ = ["ControlPlane", "SecretVault", "open_control_plane"]


class SecretVault:
    """Secrets of runs in flight, in memory only.

    A secret is needed by the runner of a job and by nobody else; keeping it out of the database
    means a database dump or backup never contains one. The price: a server restart loses them,
    and jobs of runs submitted before it then fail with an error that says so.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_run: dict[str, dict[str, str]] = {}

    def put(self, run_id: str, secrets: dict[str, str]) -> None:
        with self._lock:
            self._by_run[run_id] = dict(secrets)

    def get(self, run_id: str) -> dict[str, str] | None:
        with self._lock:
            found = self._by_run.get(run_id)
            return dict(found) if found is not None else None

    def drop(self, run_id: str) -> None:
        with self._lock:
            self._by_run.pop(run_id, None)


@dataclass
class ControlPlane:
    scheduler: Scheduler
    blobs: BlobStore
    spool_dir: Path = field(default_factory=lambda: Path(tempfile.gettempdir()))  # uploads land here first
    api_token: str | None = None  # the server's admin token (compared, never stored)
    # Without an api_token and with require_auth False, requests without a token act as an admin:
    # for tools and tests only; `kiln server` always requires tokens (see kiln.api.auth).
    require_auth: bool = False
    secrets: SecretVault = field(default_factory=SecretVault)
    # Grant, upload-session and janitor timings (KILN_GRANT_TTL_S & co., see BlobPolicy.from_env).
    blob_policy: BlobPolicy = field(default_factory=config.blob_policy)

    @property
    def db(self) -> Database:
        """The metadata database."""
        return self.scheduler.db


def open_control_plane(
    database_url: str,
    storage_url: str,
    *,
    spool_dir: Path,
    api_token: str | None = None,
    lease_ttl_s: float = 30.0,
    max_attempts: int = 3,
) -> ControlPlane:
    """Connect to the database (migrating it) and the blob store; raise if either is unavailable."""
    db = Database(database_url)
    db.migrate()
    scheduler = Scheduler(db, lease_ttl_s=lease_ttl_s, max_attempts=max_attempts)
    return ControlPlane(
        scheduler=scheduler, blobs=open_blob_store(storage_url), spool_dir=spool_dir, api_token=api_token
    )
