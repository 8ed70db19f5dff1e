"""Fixtures for the API's access tests: a served control plane on SQLite and on PostgreSQL.

The database fixtures come from the shared plugin ``tests/fixtures/databases.py``; ``served`` is a
real HTTP server (uvicorn on a loopback port) over a fresh database, with a clock the test moves.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.fixtures.databases import *  # noqa: F403  (fixtures are found by name)

from .harness import Served, serve


@pytest.fixture
def served(database_url: str, tmp_path: Path) -> Iterator[Served]:
    with serve(database_url, tmp_path) as running:
        yield running
