"""Fixtures for the metadata and scheduler integration tests; each runs on SQLite and PostgreSQL.

The database fixtures (``database``, ``database_url``, ``empty_database_url``,
``postgres_database_url``, …) come from the shared plugin ``tests/fixtures/databases.py``.
"""

from __future__ import annotations

import pytest
from tests.fixtures.databases import *  # noqa: F403  (fixtures are found by name)
from tests.integration.metadata.helpers import TTL_S, FakeClock

from kiln.metadata.db import Database
from kiln.scheduler import Scheduler


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def scheduler(database: Database, clock: FakeClock) -> Scheduler:
    return Scheduler(database, clock=clock, lease_ttl_s=TTL_S, max_attempts=3)
