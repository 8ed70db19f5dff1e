"""Fixtures for the blob-store contract suite: one ``store`` per backend, and ways to damage it.

Every test taking ``store`` runs against ``memory://``, ``file://`` (a temporary directory),
``s3://`` (the session's SeaweedFS, one key prefix per test) and ``s3://…?probe=0`` (the same
server, used as if it had no conditional writes and no sha256 checks).
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import httpx
import pytest
from tests.fixtures.seaweedfs import SeaweedFS, seaweedfs  # noqa: F401 (seaweedfs is a fixture)

from kiln.storage import BlobStore, open_blob_store
from kiln.storage.digests import digest_file, digest_to_hex
from kiln.storage.local import LocalBlobStore
from kiln.storage.memory import MemoryBlobStore

BACKENDS = [
    "memory",
    "file",
    pytest.param("s3", marks=pytest.mark.s3),
    pytest.param("s3-fallback", marks=pytest.mark.s3),
]


@dataclass
class Backend:
    """A store under test plus what the tests need to reach around it."""

    name: str
    store: BlobStore
    corrupt: Callable[[str, bytes], None]  # overwrite a stored blob's bytes behind the store's back
    fetch_grant: GrantFetcher  # present a grant URL the way a runner would; returns (status, body)


class GrantFetcher(Protocol):
    def __call__(
        self,
        url: str,
        method: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        *,
        later_s: float = 0,
    ) -> tuple[int, bytes]:
        """``later_s``: present the grant that many seconds from now (HMAC: a moved clock; S3: a sleep)."""
        ...


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """Each contract test once per backend."""
    name = request.param
    if name == "memory":
        store: BlobStore = MemoryBlobStore()
        made = Backend(name, store, store.corrupt, _hmac_fetcher(store))
    elif name == "file":
        store = LocalBlobStore(tmp_path / "store")
        made = Backend(name, store, _file_corrupter(store), _hmac_fetcher(store))
    else:
        server: SeaweedFS = request.getfixturevalue("seaweedfs")
        prefix = f"contract/{uuid.uuid4().hex[:12]}"
        # "s3-fallback" skips the capability probe, so the store assumes a server without
        # conditional writes or sha256 checks: the documented fallback, run against a real server.
        query = {"probe": "0"} if name == "s3-fallback" else {}
        store = open_blob_store(server.url(prefix, **query), **server.options())
        made = Backend(name, store, _s3_corrupter(server, prefix), _http_fetcher())
    try:
        yield made
    finally:
        made.store.close()


@pytest.fixture
def store(backend: Backend) -> BlobStore:
    """The store of the current backend."""
    return backend.store


@pytest.fixture(scope="session")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, int]:
    """A 300 MiB file of random-looking bytes, ``(path, digest, size)``, made once per session."""
    path = tmp_path_factory.mktemp("big") / "blob.bin"
    block = os.urandom(1024 * 1024)
    with open(path, "wb") as f:
        for i in range(300):
            # Each MiB differs (a counter up front), so no two parts are the same bytes.
            f.write(i.to_bytes(8, "big") + block[8:])
    digest, size = digest_file(path)
    return path, digest, size


def _file_corrupter(store: LocalBlobStore) -> Callable[[str, bytes], None]:
    def corrupt(digest: str, data: bytes) -> None:
        path = store.root / "blobs" / "sha256" / digest_to_hex(digest)
        os.chmod(path, 0o644)
        path.write_bytes(data)

    return corrupt


def _s3_corrupter(server: SeaweedFS, prefix: str) -> Callable[[str, bytes], None]:
    def corrupt(digest: str, data: bytes) -> None:
        key = f"{prefix}/blobs/sha256/{digest_to_hex(digest)}"
        server.client().put_object(Bucket=server.bucket, Key=key, Body=data)

    return corrupt


def _hmac_fetcher(store: MemoryBlobStore | LocalBlobStore) -> GrantFetcher:
    """Play the control plane's blob endpoints: check the grant, then serve or store the blob (or part)."""
    from kiln.errors import DigestMismatch, Unauthorized
    from kiln.storage import grants

    def fetch(
        url: str,
        method: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        *,
        later_s: float = 0,
    ) -> tuple[int, bytes]:
        now = time.time() + later_s
        if "/uploads/" in url:
            try:
                upload_id, part_number = grants.verify_part_url(url, method, store.grant_secret, now=now)
            except Unauthorized:
                return 403, b""
            assert body is not None
            return 200, store.upload_part(upload_id, part_number, body).encode()
        try:
            digest = grants.verify_url(url, method, store.grant_secret, now=now)
        except Unauthorized:
            return 403, b""
        if method == "GET":
            with store.open(digest) as reader:
                return 200, reader.readall()
        assert body is not None
        try:
            store.put(digest, body, len(body))
        except DigestMismatch:
            return 400, b""
        return 200, b""

    return fetch


def _http_fetcher() -> GrantFetcher:
    def fetch(
        url: str,
        method: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        *,
        later_s: float = 0,
    ) -> tuple[int, bytes]:
        time.sleep(later_s)
        response = httpx.request(method, url, content=body, headers=headers or {}, timeout=30)
        return response.status_code, response.content

    return fetch
