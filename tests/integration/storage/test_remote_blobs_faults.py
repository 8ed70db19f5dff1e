"""A fifth of the runner's part uploads break on the way (a loopback proxy cuts them); all complete."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from tests.fixtures.seaweedfs import SeaweedFS

from kiln.storage.digests import digest_file
from kiln.storage.policy import BlobPolicy

from .faultproxy import EveryFifthWrite, FaultProxy
from .plane import MIB, PATIENT, SMALL_PARTS, make_database, make_store, running_plane

pytestmark = pytest.mark.slow


def _port(url: str) -> int:
    port = urlsplit(url).port
    assert port is not None
    return port


@pytest.mark.parametrize(
    ("store_kind", "db_kind"),
    [
        pytest.param("file", "sqlite", id="file-sqlite"),
        pytest.param("s3", "postgresql", id="s3-postgresql", marks=[pytest.mark.s3, pytest.mark.postgres]),
    ],
)
def test_runner_uploads_complete_when_a_fifth_of_the_part_uploads_fail(
    store_kind: str, db_kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    files = []
    for index, size in enumerate([3 * MIB, 21 * MIB, 21 * MIB, 21 * MIB]):
        path = tmp_path / f"blob{index}"
        path.write_bytes(os.urandom(size))
        files.append((path, *digest_file(path)))
    store_url, options = make_store(store_kind, tmp_path, request)
    database_url = make_database(db_kind, tmp_path, request)
    policy = BlobPolicy(transfer=SMALL_PARTS)

    if store_kind == "s3":
        # The proxy sits between everybody and SeaweedFS: presigned URLs point through it.
        server: SeaweedFS = request.getfixturevalue("seaweedfs")
        proxy = FaultProxy(_port(server.endpoint), EveryFifthWrite()).start()
        store_url = store_url.replace(server.endpoint, proxy.endpoint)
    with running_plane(
        database_url, store_kind, store_url, options, tmp_path / "plane-spool", policy
    ) as plane:
        if store_kind == "file":
            # The proxy sits between the runner and the control plane, which serves the parts itself.
            proxy = FaultProxy(_port(plane.url), EveryFifthWrite()).start()
            client = plane.client(proxy.endpoint)
        else:
            client = plane.client()
        try:
            blobs = plane.blobs(plane.lease(), tmp_path / "spool", client=client, config=PATIENT)
            results = [blobs.upload(path, digest=digest, size=size) for path, digest, size in files]
            writes, faults = (
                proxy.requests["PUT"],
                proxy.faults["cut_request"] + proxy.faults["drop_response"],
            )
            check = plane.blobs(plane.lease(), tmp_path / "check-spool")
            for path, digest, size in files:
                assert check.download(digest, tmp_path / "back") == size  # verifies the sha256
                assert (tmp_path / "back").read_bytes() == path.read_bytes()
        finally:
            proxy.stop()

        assert writes >= 1 + 3 * 5  # one put, three uploads of five parts, plus the retries
        assert faults == writes // 5 > 0
        assert sum(r.parts_sent for r in results) == 1 + 3 * 5
        assert not any(r.existed for r in results)
        assert list(plane.store.list_uploads()) == []
