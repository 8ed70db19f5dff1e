"""Runners move blobs through grants: RemoteBlobs against a real control plane over HTTP."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kiln.storage.digests import digest_file

from .plane import ALL_PAIRS, MIB, Plane


def _file(path: Path, size: int) -> tuple[Path, str, int]:
    path.write_bytes(os.urandom(size))
    digest, size = digest_file(path)
    return path, digest, size


@pytest.mark.parametrize("plane", ALL_PAIRS, indirect=True)
def test_blobs_round_trip_through_grants(plane: Plane, tmp_path: Path) -> None:
    leased = plane.lease()
    blobs = plane.blobs(leased, tmp_path / "spool")
    for name, size in [("empty", 0), ("small", MIB), ("parts", 12 * MIB)]:
        path, digest, size = _file(tmp_path / name, size)
        result = blobs.upload(path, digest=digest, size=size)
        assert not result.existed
        assert result.parts == (3 if name == "parts" else 1)
        assert result.bytes_sent == size
        assert plane.store.stat(digest) == size
        again = blobs.upload(path, digest=digest, size=size)
        assert again.existed and again.bytes_sent == 0
        assert blobs.download(digest, tmp_path / f"{name}.back") == size
        assert (tmp_path / f"{name}.back").read_bytes() == path.read_bytes()
