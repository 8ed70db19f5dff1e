"""Fixtures for the cache integration tests: a warm in-process kiln (see ``harness.py``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.fixtures.databases import *  # noqa: F403  (fixtures are found by name)
from tests.fixtures.seaweedfs import seaweedfs  # noqa: F401 (a fixture, used by name)

from .harness import Harness, start, stop


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    kiln, server = start(tmp_path / "kiln")
    try:
        yield kiln
    finally:
        stop(kiln, server)


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
