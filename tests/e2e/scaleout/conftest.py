"""Fixtures for the scale-out end-to-end tests: ``kiln server`` on PostgreSQL and ``kiln runner``s.

The database fixtures come from ``tests/e2e/conftest.py`` (the shared plugin); ``fleet`` is a real
``kiln server`` process on a fresh PostgreSQL schema with runner processes started on demand.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.e2e.scaleout.fleet import Fleet


@pytest.fixture
def fleet(postgres_database_url: str, tmp_path: Path) -> Iterator[Fleet]:
    with Fleet(tmp_path, postgres_database_url) as running:
        yield running
