"""Fixtures for the artifact tests: the service on each database, and a whole kiln on each blob store."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.fixtures.databases import *  # noqa: F403  (fixtures are found by name)
from tests.fixtures.seaweedfs import SeaweedFS, seaweedfs  # noqa: F401 (a fixture, used by name)
from tests.integration.caches.harness import start, stop
from tests.integration.metadata.helpers import TTL_S, FakeClock

from kiln.artifacts.service import ArtifactService
from kiln.metadata.db import Database
from kiln.scheduler import Scheduler
from kiln.storage import BlobStore, open_blob_store

from .harness import ArtifactKiln


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def scheduler(database: Database, clock: FakeClock) -> Scheduler:
    return Scheduler(database, clock=clock, lease_ttl_s=TTL_S, max_attempts=3)


@pytest.fixture
def blobs() -> BlobStore:
    return open_blob_store("memory://")


@pytest.fixture
def service(database: Database, blobs: BlobStore, clock: FakeClock) -> ArtifactService:
    return ArtifactService(database, blobs, clock=clock)


def s3_url(weed: SeaweedFS, monkeypatch: pytest.MonkeyPatch, endpoint: str | None = None) -> str:
    """A fresh key prefix on SeaweedFS (through ``endpoint`` if given), its credentials in the env."""
    for name, value in weed.env().items():
        monkeypatch.setenv(name, value)
    url = weed.url(f"artifacts-{uuid.uuid4().hex[:12]}")
    return url.replace(weed.endpoint, endpoint) if endpoint else url


def make_kiln(
    tmp_path: Path, storage_url: str | None = None, weed: SeaweedFS | None = None
) -> Iterator[ArtifactKiln]:
    """A warm in-process kiln on the given blob store (the file store under ``tmp_path`` by default)."""
    harness, server = start(tmp_path / "kiln", storage_url=storage_url)
    try:
        yield ArtifactKiln(harness, harness.client, weed)
    finally:
        stop(harness, server)


@pytest.fixture(params=["file", pytest.param("s3", marks=pytest.mark.s3)])
def kiln(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[ArtifactKiln]:
    """A warm kiln on the file blob store, then on SeaweedFS."""
    if request.param == "file":
        yield from make_kiln(tmp_path)
        return
    weed = request.getfixturevalue("seaweedfs")
    yield from make_kiln(tmp_path, s3_url(weed, monkeypatch), weed=weed)


@pytest.fixture
def file_kiln(tmp_path: Path) -> Iterator[ArtifactKiln]:
    """A warm kiln on the file blob store only."""
    yield from make_kiln(tmp_path)


@pytest.fixture
def project(tmp_path: Path):
    """Write a project folder (files by name); returns it."""
    root = tmp_path / "project"

    def write(files: dict[str, str]) -> Path:
        for name, text in files.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_text(text)
        return root

    return write
