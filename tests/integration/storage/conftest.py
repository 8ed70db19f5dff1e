"""Fixtures for the storage suite: SeaweedFS and the metadata databases come from the shared plugins.

``plane`` is a served control plane over one (store, database) pair, given by indirect
parametrization with the pairs in ``plane.py``; a test module can override ``blob_policy``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.fixtures.databases import *  # noqa: F403  (fixtures are found by name)
from tests.fixtures.seaweedfs import seaweedfs  # noqa: F401 (a fixture, used by name)

from kiln.storage.policy import BlobPolicy

from .plane import SMALL_PARTS, Plane, make_database, make_store, running_plane


@pytest.fixture
def blob_policy() -> BlobPolicy:
    return BlobPolicy(transfer=SMALL_PARTS)


@pytest.fixture
def plane(request: pytest.FixtureRequest, tmp_path: Path, blob_policy: BlobPolicy) -> Iterator[Plane]:
    store_kind, db_kind = request.param
    store_url, options = make_store(store_kind, tmp_path, request)
    database_url = make_database(db_kind, tmp_path, request)
    with running_plane(
        database_url, store_kind, store_url, options, tmp_path / "plane-spool", blob_policy
    ) as served:
        yield served
