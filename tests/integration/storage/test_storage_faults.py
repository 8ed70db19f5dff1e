"""Transfers through a network that breaks: a proxy in front of the real SeaweedFS drops requests."""

from __future__ import annotations

import itertools
import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from tests.fixtures.seaweedfs import SeaweedFS

from kiln.storage import JsonFileJournal, TransferConfig, download_file, open_blob_store, upload_file
from kiln.storage.base import BlobStore
from kiln.storage.digests import digest_bytes, digest_file

from .faultproxy import EveryFifthWrite, Fault, FaultProxy, Request

pytestmark = pytest.mark.s3

MIB = 1024 * 1024
# Many retries, short waits: the test is about surviving faults, not about the backoff curve.
PATIENT = TransferConfig(
    part_size_bytes=5 * MIB, multipart_threshold_bytes=5 * MIB, part_attempts=8, backoff_base_s=0.01
)


def _through(server: SeaweedFS, proxy: FaultProxy, prefix: str) -> BlobStore:
    url = server.url(prefix).replace(server.endpoint, proxy.endpoint)
    return open_blob_store(url, **server.options())


@pytest.fixture
def prefix() -> str:
    return f"faults/{uuid.uuid4().hex[:12]}"


@pytest.fixture
def direct(seaweedfs: SeaweedFS, prefix: str) -> Iterator[BlobStore]:
    """The same store without the proxy, to check what really landed."""
    store = open_blob_store(seaweedfs.url(prefix), **seaweedfs.options())
    yield store
    store.close()


def _port(endpoint: str) -> int:
    port = urlsplit(endpoint).port
    assert port is not None
    return port


def test_uploads_complete_when_a_fifth_of_the_writes_fail(
    seaweedfs: SeaweedFS, direct: BlobStore, prefix: str, tmp_path: Path
) -> None:
    files = []
    for index, size in enumerate([3 * MIB, 41 * MIB, 41 * MIB, 41 * MIB]):
        path = tmp_path / f"blob{index}"
        path.write_bytes(os.urandom(size))
        files.append((path, *digest_file(path)))

    with FaultProxy(_port(seaweedfs.endpoint), EveryFifthWrite()) as proxy:
        store = _through(seaweedfs, proxy, prefix)
        results = [
            upload_file(
                store, path, digest, size, config=PATIENT, journal=JsonFileJournal(tmp_path / "spool")
            )
            for path, digest, size in files
        ]

    writes = proxy.requests["PUT"]
    assert writes >= 1 + 3 * 9  # one put, three uploads of nine parts, plus the retries
    assert proxy.faults["cut_request"] + proxy.faults["drop_response"] == writes // 5
    assert sum(r.parts_uploaded for r in results) == 1 + 3 * 9
    for path, digest, _size in files:
        download_file(direct, digest, tmp_path / "check")  # verifies the sha256
        assert (tmp_path / "check").read_bytes() == path.read_bytes()
    assert list(direct.list_uploads()) == []


def test_a_lost_complete_response_still_ends_with_the_blob_stored(
    seaweedfs: SeaweedFS, direct: BlobStore, prefix: str, tmp_path: Path
) -> None:
    """botocore repeats the Complete; SeaweedFS answers 412 (or NoSuchUpload): kiln checks and succeeds."""
    dropped = threading.Event()

    def drop_first_complete(request: Request) -> Fault | None:
        if request.method == "POST" and "uploadId=" in request.target and not dropped.is_set():
            dropped.set()
            return "drop_response"
        return None

    data = os.urandom(12 * MIB)
    digest = digest_bytes(data)
    (tmp_path / "blob").write_bytes(data)

    with FaultProxy(_port(seaweedfs.endpoint), drop_first_complete) as proxy:
        result = upload_file(
            _through(seaweedfs, proxy, prefix), tmp_path / "blob", digest, len(data), config=PATIENT
        )

    assert proxy.faults["drop_response"] == 1
    assert result.parts_uploaded == 3
    with direct.open(digest) as reader:
        assert reader.readall() == data
    assert list(direct.list_uploads()) == []


def test_a_download_cut_short_resumes_by_byte_range(
    seaweedfs: SeaweedFS, direct: BlobStore, prefix: str, tmp_path: Path
) -> None:
    data = os.urandom(30 * MIB)
    digest = digest_bytes(data)
    direct.put(digest, data, len(data))
    cuts = itertools.count()

    def cut_two_gets(request: Request) -> Fault | None:
        if request.method == "GET" and "/blobs/" in request.target and next(cuts) < 2:
            return "cut_response"
        return None

    # Cut after 2..8 MiB, so some of the body has been written when the GET breaks.
    with FaultProxy(_port(seaweedfs.endpoint), cut_two_gets, response_cut_bytes=(2 * MIB, 8 * MIB)) as proxy:
        result = download_file(_through(seaweedfs, proxy, prefix), digest, tmp_path / "out", config=PATIENT)

    assert proxy.faults["cut_response"] == 2
    assert result.attempts == 3 and result.resumed_bytes > 0
    assert (tmp_path / "out").read_bytes() == data
