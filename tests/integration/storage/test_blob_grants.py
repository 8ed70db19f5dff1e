"""Grants through HTTP: one grant opens one object (one part of one upload), and expires.

Grants here live two seconds, so the test can watch them expire; the runner renews them as it goes.
"""

from __future__ import annotations

import base64
import hashlib
import os
import time
from pathlib import Path

import httpx
import pytest

from kiln.api.blob_models import UploadStartIn
from kiln.storage.digests import digest_file
from kiln.storage.policy import BlobPolicy

from .plane import MIB, SMALL_PARTS, TWO_PAIRS, Plane


@pytest.fixture
def blob_policy() -> BlobPolicy:
    return BlobPolicy(grant_ttl_s=2, transfer=SMALL_PARTS)


def _file(path: Path, size: int) -> tuple[Path, str, int]:
    path.write_bytes(os.urandom(size))
    digest, size = digest_file(path)
    return path, digest, size


def _send(plane: Plane, method: str, url: str, data: bytes | None = None, headers: dict | None = None) -> int:
    absolute = url if "://" in url else plane.url + url
    return httpx.request(method, absolute, content=data, headers=headers or {}, timeout=30).status_code


def _md5(data: bytes) -> dict[str, str]:
    return {"Content-MD5": base64.b64encode(hashlib.md5(data).digest()).decode()}


@pytest.mark.parametrize("plane", TWO_PAIRS, indirect=True)
def test_a_grant_opens_one_object_and_expires(plane: Plane, tmp_path: Path) -> None:
    leased = plane.lease()
    client = plane.client()
    blobs = plane.blobs(leased, tmp_path / "spool")
    a_path, a, a_size = _file(tmp_path / "a", MIB)
    _, b, b_size = _file(tmp_path / "b", MIB)
    blobs.upload(a_path, digest=a, size=a_size)
    blobs.upload(tmp_path / "b", digest=b, size=b_size)

    get_a = client.blob_download_grant(leased.attempt_id, leased.lease_token, a).grant
    assert _send(plane, "GET", get_a.url) == 200
    assert (
        httpx.get(get_a.url if "://" in get_a.url else plane.url + get_a.url).content == a_path.read_bytes()
    )
    # The same grant, pointed at another blob, or used to write: refused.
    assert _send(plane, "GET", get_a.url.replace(a[7:], b[7:])) in (401, 403)
    assert _send(plane, "PUT", get_a.url, b"x" * 10) in (401, 403)

    # A multipart upload's part grants: each opens its own part of its own upload only.
    c_path, c, c_size = _file(tmp_path / "c", 12 * MIB)
    started = client.start_blob_upload(
        leased.attempt_id, leased.lease_token, UploadStartIn(digest=c, size_bytes=c_size)
    )
    assert started.upload_id is not None and sorted(started.grants) == [1, 2, 3]
    part1 = c_path.read_bytes()[: 5 * MIB]
    other = started.grants[2].url
    tampered = other.replace("partNumber=2", "partNumber=1").replace("/parts/2?", "/parts/1?")
    assert tampered != other
    assert _send(plane, "PUT", tampered, part1, _md5(part1)) in (401, 403)
    assert _send(plane, "PUT", started.grants[1].url, part1, _md5(part1)) == 200
    assert _send(plane, "GET", started.grants[1].url) in (401, 403, 405)

    time.sleep(3.1)  # every grant above has expired now
    assert _send(plane, "GET", get_a.url) in (401, 403)
    assert _send(plane, "PUT", started.grants[1].url, part1, _md5(part1)) in (401, 403)
    # The runner renews its grants, so a transfer still works with two-second grants.
    assert blobs.download(a, tmp_path / "a.back") == a_size
    assert blobs.upload(c_path, digest=c, size=c_size).parts == 3
