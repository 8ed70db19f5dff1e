"""A real control plane for blob tests: database, blob store and HTTP server, plus a leased attempt.

``running_plane`` serves the app on a loopback port with ``BackgroundServer``, exactly as
``kiln server`` does; tests then move blobs with the runner's ``RemoteBlobs`` over HTTP.
"""

from __future__ import annotations

import secrets
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests.fixtures.seaweedfs import SeaweedFS

from kiln.api.app import create_app
from kiln.api.plane import ControlPlane
from kiln.api.server import BackgroundServer
from kiln.metadata.db import Database
from kiln.runner.blobs import RemoteBlobs
from kiln.runner.client import ControlPlaneClient
from kiln.scheduler import LeasedJob, RunContext, Scheduler
from kiln.storage import BlobStore, TransferConfig, open_blob_store
from kiln.storage.local import LocalBlobStore
from kiln.storage.policy import BlobPolicy

MIB = 1024 * 1024
# Small parts so that a few MiB make a multipart upload; many quick retries (faults are injected).
SMALL_PARTS = TransferConfig(part_size_bytes=5 * MIB, multipart_threshold_bytes=5 * MIB)
PATIENT = TransferConfig(part_attempts=8, backoff_base_s=0.01, backoff_cap_s=0.2, stall_timeout_s=20)

# (store, database) pairs. Every pair for the API's behaviour; two for the heavy tests.
ALL_PAIRS = [
    pytest.param(("file", "sqlite"), id="file-sqlite"),
    pytest.param(("file", "postgresql"), id="file-postgresql", marks=pytest.mark.postgres),
    pytest.param(("s3", "sqlite"), id="s3-sqlite", marks=pytest.mark.s3),
    pytest.param(("s3", "postgresql"), id="s3-postgresql", marks=[pytest.mark.s3, pytest.mark.postgres]),
]
TWO_PAIRS = [ALL_PAIRS[0], ALL_PAIRS[3]]


@dataclass
class Plane:
    """A served control plane, its store (the same object the server uses) and how to reach it."""

    cp: ControlPlane
    server: BackgroundServer
    token: str
    store_kind: str
    store_url: str
    store_options: dict[str, str]

    @property
    def store(self) -> BlobStore:
        return self.cp.blobs

    @property
    def url(self) -> str:
        return self.server.url

    def client(self, base_url: str | None = None) -> ControlPlaneClient:
        return ControlPlaneClient(base_url or self.url, self.token, retry_deadline_s=20)

    def lease(self, tenant: str = "acme") -> LeasedJob:
        """Submit a one-job run for ``tenant`` and lease its job: an attempt that holds a lease."""
        scheduler = self.cp.scheduler
        view = scheduler.submit_run(
            RunContext(tenant=tenant, repo="web", ref="main"),
            workflow_name="ci",
            jobs=[("build", {"steps": [{"run": "true"}]})],
            workflow_json={"name": "ci"},
            workflow_text="name: ci\n",
            source_digest="sha256:" + secrets.token_hex(32),
        )
        leased = scheduler.lease_next(f"runner-{uuid.uuid4().hex[:6]}", run_id=view.run_id)
        assert leased is not None
        return leased

    def blobs(
        self,
        leased: LeasedJob,
        spool: Path,
        *,
        client: ControlPlaneClient | None = None,
        config: TransferConfig = PATIENT,
    ) -> RemoteBlobs:
        return RemoteBlobs(
            client or self.client(), leased.attempt_id, leased.lease_token, spool, config=config
        )


def make_store(
    kind: str, root: Path, request: pytest.FixtureRequest, **query: str
) -> tuple[str, dict[str, str]]:
    """An empty store of ``kind``: its URL and the options ``open_blob_store`` needs."""
    if kind == "file":
        return (root / "store").as_uri() + "?fsync=0", {}
    server: SeaweedFS = request.getfixturevalue("seaweedfs")
    return server.url(f"blobs/{uuid.uuid4().hex[:12]}", **query), server.options()


def make_database(kind: str, root: Path, request: pytest.FixtureRequest) -> str:
    """A fresh, migrated database of ``kind``."""
    if kind == "sqlite":
        path = root / "kiln.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        return f"sqlite:///{path}"
    url: str = request.getfixturevalue("postgres_database_url")
    return url


@contextmanager
def running_plane(
    database_url: str,
    store_kind: str,
    store_url: str,
    store_options: dict[str, str],
    spool: Path,
    policy: BlobPolicy,
) -> Iterator[Plane]:
    db = Database(database_url)
    store = open_blob_store(store_url, **store_options)
    token = secrets.token_urlsafe(16)
    cp = ControlPlane(
        scheduler=Scheduler(db, lease_ttl_s=600),
        blobs=store,
        spool_dir=spool,
        api_token=token,
        blob_policy=policy,
    )
    try:
        with BackgroundServer(create_app(cp)) as server:
            yield Plane(cp, server, token, store_kind, store_url, store_options)
    finally:
        store.close()
        db.dispose()


def local_root(plane: Plane) -> Path:
    """The file store's directory (for tests that damage it behind the store's back)."""
    assert isinstance(plane.store, LocalBlobStore)
    return plane.store.root
