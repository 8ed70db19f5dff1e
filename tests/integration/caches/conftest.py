"""Fixtures for the cache integration tests: a warm in-process kiln (see ``harness.py``)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.fixtures.databases import *  # noqa: F403  (fixtures are found by name)
from tests.fixtures.seaweedfs import seaweedfs  # noqa: F401 (a fixture, used by name)
from tests.integration.caches.harness import Harness, start, stop


def _harness(tmp_path: Path, storage_url: str | None = None) -> Iterator[Harness]:
    kiln, server = start(tmp_path / "kiln", storage_url=storage_url)
    try:
        yield kiln
    finally:
        stop(kiln, server)


@pytest.fixture(params=["file", pytest.param("s3", marks=pytest.mark.s3)])
def harness(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Harness]:
    """A warm kiln on the file blob store, then on SeaweedFS."""
    if request.param == "file":
        yield from _harness(tmp_path)
        return
    weed = request.getfixturevalue("seaweedfs")
    for name, value in weed.env().items():
        monkeypatch.setenv(name, value)
    yield from _harness(tmp_path, weed.url(f"caches-{uuid.uuid4().hex[:12]}"))


@pytest.fixture
def file_harness(tmp_path: Path) -> Iterator[Harness]:
    """A warm kiln on the file blob store only (for the slow property test)."""
    yield from _harness(tmp_path)


@pytest.fixture
def write_project(tmp_path: Path):
    """Write files into a project folder (created once per test); returns the folder."""
    root = tmp_path / "project"

    def write(files: dict[str, str]) -> Path:
        for name, text in files.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_text(text)
        return root

    return write
