"""Runners move blobs through grants: RemoteBlobs against a real control plane over HTTP."""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from tests.fixtures.seaweedfs import SeaweedFS

from kiln.api.blob_models import PartIn, UploadCompleteIn, UploadStartIn
from kiln.errors import BlobNotFound, Conflict, DigestMismatch, KilnError, UploadNotFound
from kiln.storage.digests import digest_file
from kiln.storage.s3 import S3BlobStore

from .plane import ALL_PAIRS, MIB, TWO_PAIRS, Plane, local_root


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


@pytest.mark.parametrize("plane", ALL_PAIRS, indirect=True)
def test_blob_calls_are_fenced_by_the_attempts_lease(plane: Plane, tmp_path: Path) -> None:
    mine, theirs = plane.lease(), plane.lease()
    client = plane.client()
    path, digest, size = _file(tmp_path / "blob", 12 * MIB)
    start = UploadStartIn(digest=digest, size_bytes=size)

    _refused(lambda: client.start_blob_upload(mine.attempt_id, theirs.lease_token, start))
    _refused(lambda: client.blob_download_grant(mine.attempt_id, "not-a-token", digest))

    session = client.start_blob_upload(mine.attempt_id, mine.lease_token, start)
    assert session.session_id is not None and session.upload_id is not None
    # Another attempt, with its own valid lease, cannot finish or abort this attempt's session.
    with pytest.raises(Conflict):
        client.complete_blob_upload(
            theirs.attempt_id, theirs.lease_token, session.session_id, UploadCompleteIn()
        )
    with pytest.raises(Conflict):
        client.abort_blob_upload(theirs.attempt_id, theirs.lease_token, session.session_id)

    # Once the attempt has ended, its token opens nothing.
    plane.cp.scheduler.complete_attempt(mine.attempt_id, mine.lease_token, status="success")
    _refused(lambda: client.blob_part_grants(mine.attempt_id, mine.lease_token, session.session_id, [1]))
    _refused(lambda: plane.blobs(mine, tmp_path / "spool").upload(path, digest=digest, size=size))


@pytest.mark.parametrize("plane", TWO_PAIRS, indirect=True)
def test_downloads_are_the_tenants_own_and_verified(
    plane: Plane, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    acme, other = plane.lease("acme"), plane.lease("other")
    path, digest, size = _file(tmp_path / "blob", 2 * MIB)
    acme_blobs = plane.blobs(acme, tmp_path / "spool")
    acme_blobs.upload(path, digest=digest, size=size)

    # Another tenant that merely knows the digest gets the same answer as for a blob nobody has.
    with pytest.raises(BlobNotFound):
        plane.blobs(other, tmp_path / "other-spool").download(digest, tmp_path / "stolen")
    with pytest.raises(BlobNotFound):
        acme_blobs.download("sha256:" + "ab" * 32, tmp_path / "missing")
    assert not (tmp_path / "stolen").exists() and not (tmp_path / "missing").exists()

    # A flipped byte in the stored blob: the runner's download refuses it and leaves nothing.
    damaged = bytearray(path.read_bytes())
    damaged[size // 2] ^= 0xFF
    _overwrite(plane, digest, bytes(damaged), request)
    with pytest.raises(DigestMismatch):
        acme_blobs.download(digest, tmp_path / "back")
    assert not (tmp_path / "back").exists()
    assert list(tmp_path.glob(".back.*")) == []


@pytest.mark.parametrize("plane", TWO_PAIRS, indirect=True)
def test_abort_and_complete_can_be_repeated(plane: Plane, tmp_path: Path) -> None:
    leased = plane.lease()
    client = plane.client()
    path, digest, size = _file(tmp_path / "blob", 7 * MIB)
    start = UploadStartIn(digest=digest, size_bytes=size)

    first = client.start_blob_upload(leased.attempt_id, leased.lease_token, start)
    assert first.session_id is not None and first.upload_id is not None
    client.abort_blob_upload(leased.attempt_id, leased.lease_token, first.session_id)
    client.abort_blob_upload(leased.attempt_id, leased.lease_token, first.session_id)
    assert list(plane.store.list_uploads()) == []
    with pytest.raises(UploadNotFound):
        client.complete_blob_upload(
            leased.attempt_id, leased.lease_token, first.session_id, UploadCompleteIn()
        )

    # Resuming an aborted upload id starts afresh; the parts go straight to their grants.
    second = client.start_blob_upload(
        leased.attempt_id,
        leased.lease_token,
        UploadStartIn(digest=digest, size_bytes=size, resume_upload_id=first.upload_id),
    )
    assert second.session_id != first.session_id and not second.resumed
    data = path.read_bytes()
    parts = []
    for number, chunk in ((1, data[: 5 * MIB]), (2, data[5 * MIB :])):
        url = second.grants[number].url
        md5 = hashlib.md5(chunk)
        answer = httpx.put(
            url if "://" in url else plane.url + url,
            content=chunk,
            headers={"Content-MD5": base64.b64encode(md5.digest()).decode()},
            timeout=30,
        )
        assert answer.status_code == 200
        parts.append(PartIn(part_number=number, size_bytes=len(chunk), etag=md5.hexdigest()))
    assert second.session_id is not None
    body = UploadCompleteIn(parts=parts)
    done = client.complete_blob_upload(leased.attempt_id, leased.lease_token, second.session_id, body)
    again = client.complete_blob_upload(leased.attempt_id, leased.lease_token, second.session_id, body)
    assert done == again and (done.outcome, done.size_bytes) == ("created", size)
    client.abort_blob_upload(leased.attempt_id, leased.lease_token, second.session_id)  # ended: a no-op
    assert plane.store.stat(digest) == size
    assert plane.blobs(leased, tmp_path / "spool").download(digest, tmp_path / "back") == size


def _refused(call: Callable[[], object]) -> None:
    """The call is refused for want of the lease: LeaseLost (409), or the API's own token check."""
    with pytest.raises(KilnError) as caught:
        call()
    assert type(caught.value).__name__ in {"LeaseLost", "Forbidden", "Unauthorized"}, caught.value


def _overwrite(plane: Plane, digest: str, data: bytes, request: pytest.FixtureRequest) -> None:
    """Replace a stored blob's bytes behind the store's back."""
    if plane.store_kind == "file":
        path = local_root(plane) / "blobs" / "sha256" / digest[7:]
        os.chmod(path, 0o644)
        path.write_bytes(data)
        return
    server: SeaweedFS = request.getfixturevalue("seaweedfs")
    store = plane.store
    assert isinstance(store, S3BlobStore)
    server.client().put_object(
        Bucket=server.bucket, Key=f"{store.prefix}/blobs/sha256/{digest[7:]}", Body=data
    )


@pytest.mark.parametrize("plane", TWO_PAIRS, indirect=True)
def test_another_tenants_blob_is_proven_not_claimed(plane: Plane, tmp_path: Path) -> None:
    """Dedup across tenants: the digest alone gets a challenge; the runner with the bytes proves them."""
    acme, other = plane.lease("acme"), plane.lease("other")
    path, digest, size = _file(tmp_path / "blob", 12 * MIB)
    plane.blobs(acme, tmp_path / "spool").upload(path, digest=digest, size=size)

    # A runner that only knows the digest: no "exists", no size, no download, no proof it can make.
    client = plane.client()
    for claimed in (size, size - 1):
        answer = client.start_blob_upload(
            other.attempt_id, other.lease_token, UploadStartIn(digest=digest, size_bytes=claimed)
        )
        assert (answer.exists, answer.session_id, answer.challenge) == (
            False,
            None,
            f"attempt/{other.attempt_id}",
        )
    guess = UploadStartIn(digest=digest, size_bytes=size, proof=hashlib.sha256(b"guess").hexdigest())
    with pytest.raises(DigestMismatch):
        client.start_blob_upload(other.attempt_id, other.lease_token, guess)
    with pytest.raises(BlobNotFound):
        plane.blobs(other, tmp_path / "other-spool").download(digest, tmp_path / "stolen")

    # The other tenant's runner that has the bytes proves them and sends nothing.
    other_blobs = plane.blobs(other, tmp_path / "other-spool")
    result = other_blobs.upload(path, digest=digest, size=size)
    assert result.existed and result.bytes_sent == 0
    assert other_blobs.download(digest, tmp_path / "back") == size
