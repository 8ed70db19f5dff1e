"""Fixtures for the artifact service tests: a scheduler and the service on one database, per backend."""

from __future__ import annotations

import pytest
from tests.fixtures.databases import *  # noqa: F403  (fixtures are found by name)
from tests.integration.metadata.helpers import TTL_S, FakeClock

from kiln.artifacts.service import ArtifactService
from kiln.metadata.db import Database
from kiln.scheduler import Scheduler
from kiln.storage import BlobStore, open_blob_store


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
