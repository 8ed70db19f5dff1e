"""Fetch a run's source snapshot (once per runner) and unpack a fresh copy for each job."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from kiln.archive import unpack
from kiln.errors import DigestMismatch
from kiln.runner.client import ControlPlaneClient

__all__ = ["fetch_source", "fresh_workspace"]


def fetch_source(
    client: ControlPlaneClient, digest: str, cache_dir: Path, lease_token: str | None = None
) -> Path:
    """The local path of the source archive ``digest``, downloaded and verified if not cached.

    The cache is content-addressed, so a hit needs no check against the server; a download is
    hashed while it streams and renamed into place only when it matches. A runner downloads with
    its job token (``lease_token``), which may fetch that job's run's source and no other.
    """
    hexdigest = digest.removeprefix("sha256:")
    cached = cache_dir / f"{hexdigest}.tar.zst"
    if cached.exists():
        return cached
    cache_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".download-", dir=cache_dir)
    try:
        sha = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, client.download_source(digest, lease_token) as response:
            for chunk in response.iter_bytes():
                sha.update(chunk)
                out.write(chunk)
        if sha.hexdigest() != hexdigest:
            raise DigestMismatch(f"source archive {digest} downloaded as sha256:{sha.hexdigest()}")
        os.replace(tmp, cached)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return cached


def fresh_workspace(archive: Path, dest: Path) -> None:
    """Unpack ``archive`` into ``dest``, which must not exist yet."""
    dest.mkdir(parents=True)
    try:
        with archive.open("rb") as source:
            unpack(source, dest)
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
