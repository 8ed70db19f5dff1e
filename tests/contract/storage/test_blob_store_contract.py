"""The blob-store contract: every backend (memory, file, s3) must pass every test here."""

from __future__ import annotations

import base64
import hashlib
import os
import threading
import time
from pathlib import Path

import pytest

from kiln.errors import BlobNotFound, DigestMismatch, IntegrityError, UploadNotFound, UsageError
from kiln.storage import (
    MIN_PART_SIZE_BYTES,
    BlobStore,
    JsonFileJournal,
    PartEntry,
    TransferConfig,
    WriteOutcome,
    download_file,
    upload_file,
)
from kiln.storage.digests import digest_bytes

from .conftest import Backend

MIB = 1024 * 1024
SMALL_PARTS = TransferConfig(part_size_bytes=5 * MIB, multipart_threshold_bytes=5 * MIB)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _multipart(
    store: BlobStore, data: bytes, part_size: int = MIN_PART_SIZE_BYTES
) -> tuple[str, list[PartEntry]]:
    digest = digest_bytes(data)
    upload_id = store.create_upload(digest, len(data), part_size)
    parts = []
    for index, start in enumerate(range(0, len(data), part_size), start=1):
        chunk = data[start : start + part_size]
        parts.append(PartEntry(index, len(chunk), store.upload_part(upload_id, index, chunk)))
    return upload_id, parts


# -- round trips -----------------------------------------------------------------------------------


def test_store_satisfies_the_protocol(store: BlobStore) -> None:
    assert isinstance(store, BlobStore)


@pytest.mark.parametrize("size", [0, 1, 4096, 5 * MIB + 3])
def test_put_then_open_returns_the_same_bytes(store: BlobStore, size: int) -> None:
    data = os.urandom(size)
    digest = digest_bytes(data)

    assert store.put(digest, data, size) is WriteOutcome.CREATED

    assert store.exists(digest)
    assert store.stat(digest) == size
    with store.open(digest) as reader:
        assert reader.readall() == data


@pytest.mark.parametrize("size", [0, 3 * MIB, 17 * MIB + 5])
def test_upload_file_then_download_file_round_trips(store: BlobStore, tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    digest = digest_bytes(data)
    source = _write(tmp_path / "in.bin", data)

    result = upload_file(
        store, source, digest, size, config=SMALL_PARTS, journal=JsonFileJournal(tmp_path / "spool")
    )
    download_file(store, digest, tmp_path / "out.bin")

    assert (tmp_path / "out.bin").read_bytes() == data
    assert result.existed is False
    assert result.parts_total == max(1, -(-size // (5 * MIB)))
    assert list(store.list_uploads()) == []
    assert list((tmp_path / "spool").iterdir()) == []  # the journal record is gone once complete


@pytest.mark.slow
def test_a_300_mib_blob_round_trips(
    store: BlobStore, big_file: tuple[Path, str, int], tmp_path: Path
) -> None:
    path, digest, size = big_file

    result = upload_file(store, path, digest, size, journal=JsonFileJournal(tmp_path / "spool"))
    download = download_file(store, digest, tmp_path / "out.bin")

    assert (result.parts_total, result.parts_uploaded, result.existed) == (38, 38, False)  # 8 MiB parts
    assert download.size_bytes == size
    hasher = hashlib.sha256()
    with open(tmp_path / "out.bin", "rb") as f:
        while chunk := f.read(8 * MIB):
            hasher.update(chunk)
    assert "sha256:" + hasher.hexdigest() == digest


def test_reading_from_an_offset_continues_the_verification(store: BlobStore) -> None:
    data = os.urandom(100_000)
    digest = digest_bytes(data)
    store.put(digest, data, len(data))
    hasher = hashlib.sha256(data[:40_000])

    with store.open(digest, offset=40_000, hasher=hasher) as reader:
        assert reader.readall() == data[40_000:]

    with (
        pytest.raises(DigestMismatch),
        store.open(digest, offset=40_000, hasher=hashlib.sha256(b"x")) as reader,
    ):
        reader.readall()


# -- verification ----------------------------------------------------------------------------------


def test_put_refuses_bytes_that_do_not_match_the_digest(store: BlobStore) -> None:
    digest = digest_bytes(b"the real bytes")

    with pytest.raises(DigestMismatch):
        store.put(digest, b"other bytes!!!", 14)

    assert not store.exists(digest)


@pytest.mark.parametrize("given", [b"the real byte", b"the real bytes and more"])
def test_put_refuses_a_source_of_the_wrong_length(store: BlobStore, given: bytes) -> None:
    digest = digest_bytes(b"the real bytes")

    with pytest.raises(DigestMismatch):
        store.put(digest, given, 14)

    assert not store.exists(digest)


def test_upload_file_refuses_a_multipart_file_that_does_not_match(store: BlobStore, tmp_path: Path) -> None:
    data = os.urandom(11 * MIB)
    claimed = digest_bytes(data[:-1] + b"\x00")
    source = _write(tmp_path / "in.bin", data)

    with pytest.raises(DigestMismatch):
        upload_file(
            store, source, claimed, len(data), config=SMALL_PARTS, journal=JsonFileJournal(tmp_path / "j")
        )

    assert not store.exists(claimed)
    assert list(store.list_uploads()) == []  # a file that can never complete is not left resumable


def test_a_flipped_byte_in_a_stored_blob_is_detected_on_read(backend: Backend, tmp_path: Path) -> None:
    data = os.urandom(2 * MIB)
    digest = digest_bytes(data)
    backend.store.put(digest, data, len(data))
    flipped = bytearray(data)
    flipped[1234567] ^= 0x01
    backend.corrupt(digest, bytes(flipped))

    with pytest.raises(DigestMismatch), backend.store.open(digest) as reader:
        reader.readall()
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    with pytest.raises(DigestMismatch):
        download_file(backend.store, digest, downloads / "out.bin")
    assert list(downloads.iterdir()) == []  # no partial or unverified file left behind


def test_the_last_chunk_is_withheld_when_verification_fails(backend: Backend) -> None:
    data = os.urandom(1000)
    digest = digest_bytes(data)
    backend.store.put(digest, data, len(data))
    backend.corrupt(digest, data[:-1] + bytes([data[-1] ^ 0xFF]))

    with backend.store.open(digest) as reader:
        head = reader.read(999)
        with pytest.raises(DigestMismatch):
            reader.read(1)  # a consumer that stops at `size` bytes is still told
    assert head == data[:999]


def test_a_missing_blob_is_blob_not_found(store: BlobStore, tmp_path: Path) -> None:
    digest = digest_bytes(b"never stored")

    assert not store.exists(digest)
    with pytest.raises(BlobNotFound):
        store.stat(digest)
    with pytest.raises(BlobNotFound):
        store.open(digest)
    with pytest.raises(BlobNotFound):
        download_file(store, digest, tmp_path / "out.bin")


def test_malformed_digests_are_refused(store: BlobStore) -> None:
    for bad in ["sha256:XYZ", "md5:" + "0" * 32, "0" * 64, "sha256:" + "A" * 64]:
        with pytest.raises(UsageError):
            store.exists(bad)


# -- create-only -----------------------------------------------------------------------------------


def test_a_second_put_of_the_same_blob_writes_nothing(store: BlobStore) -> None:
    digest = digest_bytes(b"once")

    assert store.put(digest, b"once", 4) is WriteOutcome.CREATED
    assert store.put(digest, b"once", 4) is WriteOutcome.EXISTED


def test_a_put_whose_size_contradicts_the_stored_blob_is_an_integrity_error(store: BlobStore) -> None:
    digest = digest_bytes(b"once")
    store.put(digest, b"once", 4)

    with pytest.raises(IntegrityError):
        store.put(digest, b"once more", 9)


def test_completing_an_upload_of_an_existing_blob_keeps_the_first_and_drops_the_upload(
    store: BlobStore,
) -> None:
    data = os.urandom(6 * MIB)
    upload_id, parts = _multipart(store, data)
    store.put(digest_bytes(data), data, len(data))

    assert store.complete_upload(upload_id, parts) is WriteOutcome.EXISTED
    assert list(store.list_uploads()) == []


def test_upload_file_skips_a_blob_that_is_already_stored(store: BlobStore, tmp_path: Path) -> None:
    data = os.urandom(12 * MIB)
    digest = digest_bytes(data)
    store.put(digest, data, len(data))

    result = upload_file(store, _write(tmp_path / "in", data), digest, len(data), config=SMALL_PARTS)

    assert result.existed and result.parts_uploaded == 0 and result.uploaded_bytes == 0


def test_sixteen_racing_writers_publish_one_whole_blob(store: BlobStore) -> None:
    """Half the writers put, half go multipart; readers polling meanwhile see nothing or all of it."""
    data = os.urandom(6 * MIB)
    digest = digest_bytes(data)
    outcomes: list[WriteOutcome] = []
    seen: list[str] = []
    errors: list[BaseException] = []
    start = threading.Barrier(16)
    writers_done = threading.Event()

    def write(index: int) -> None:
        try:
            start.wait()
            if index % 2:
                outcomes.append(store.put(digest, data, len(data)))
            else:
                upload_id, parts = _multipart(store, data)
                outcomes.append(store.complete_upload(upload_id, parts))
        except BaseException as exc:
            errors.append(exc)

    def read() -> None:
        while not writers_done.is_set():
            try:
                with store.open(digest) as reader:
                    seen.append("whole" if reader.readall() == data else "WRONG")
            except BlobNotFound:
                seen.append("nothing")
            except BaseException as exc:
                errors.append(exc)
                return

    readers = [threading.Thread(target=read) for _ in range(2)]
    writers = [threading.Thread(target=write, args=(i,)) for i in range(16)]
    for thread in readers + writers:
        thread.start()
    for thread in writers:
        thread.join()
    writers_done.set()
    for thread in readers:
        thread.join()

    assert errors == []
    assert len(outcomes) == 16
    assert set(seen) <= {"nothing", "whole"}
    if store.capabilities.conditional_create and store.capabilities.conditional_complete:
        assert outcomes.count(WriteOutcome.CREATED) == 1  # the first writer wins, the others are told
    else:
        # Without server-side conditions a few writers may each "create": they wrote the same
        # bytes to the same content address, which is why the fallback is safe.
        assert outcomes.count(WriteOutcome.CREATED) >= 1
    with store.open(digest) as reader:
        assert reader.readall() == data
    assert list(store.list_uploads()) == []


# -- multipart -------------------------------------------------------------------------------------


def test_list_parts_reports_the_parts_with_their_md5(backend: Backend) -> None:
    store = backend.store
    data = os.urandom(11 * MIB)
    upload_id, parts = _multipart(store, data)

    # Re-uploading a part number replaces the part: first with other bytes, then back.
    store.upload_part(upload_id, 2, os.urandom(5 * MIB))
    etag = store.upload_part(upload_id, 2, data[5 * MIB : 10 * MIB])

    assert etag == hashlib.md5(data[5 * MIB : 10 * MIB]).hexdigest() == parts[1].etag
    listed = store.list_parts(upload_id)
    if backend.name.startswith("s3"):
        # Measured: SeaweedFS 4.48 lists every version of a re-uploaded part (S3 lists the last).
        # Completing names the ETag, which picks the right version; resume matches on ETag too.
        assert set(parts) <= set(listed)
        assert [p.part_number for p in listed] == sorted(p.part_number for p in listed)
    else:
        assert listed == parts
    assert store.complete_upload(upload_id, parts) is WriteOutcome.CREATED
    with store.open(digest_bytes(data)) as reader:
        assert reader.readall() == data


def test_abort_is_idempotent_and_final(store: BlobStore) -> None:
    data = os.urandom(6 * MIB)
    upload_id, parts = _multipart(store, data)
    assert [u.upload_id for u in store.list_uploads()] == [upload_id]

    store.abort_upload(upload_id)
    store.abort_upload(upload_id)

    assert list(store.list_uploads()) == []
    with pytest.raises(UploadNotFound):
        store.list_parts(upload_id)
    with pytest.raises(UploadNotFound):
        store.upload_part(upload_id, 1, b"late")
    with pytest.raises(UploadNotFound):
        store.complete_upload(upload_id, parts)
    assert not store.exists(digest_bytes(data))


def test_a_repeated_complete_reports_the_blob_as_existing(store: BlobStore) -> None:
    """The second Complete stands for one whose answer was lost: the caller learns the blob is there."""
    data = os.urandom(6 * MIB)
    upload_id, parts = _multipart(store, data)

    assert store.complete_upload(upload_id, parts) is WriteOutcome.CREATED
    assert store.complete_upload(upload_id, parts) is WriteOutcome.EXISTED


def test_complete_checks_the_part_list(store: BlobStore) -> None:
    data = os.urandom(11 * MIB)
    upload_id, parts = _multipart(store, data)

    with pytest.raises(IntegrityError):  # an ETag the server does not have
        store.complete_upload(upload_id, [parts[0], parts[1]._replace(etag="0" * 32), parts[2]])
    with pytest.raises(UsageError):  # out of order
        store.complete_upload(upload_id, [parts[1], parts[0], parts[2]])
    with pytest.raises(UsageError):  # a part other than the last under 5 MiB
        store.complete_upload(upload_id, [parts[2], PartEntry(4, parts[0].size_bytes, parts[0].etag)])

    assert store.complete_upload(upload_id, parts) is WriteOutcome.CREATED  # still completable


def test_a_multipart_upload_whose_parts_do_not_hash_to_the_digest_is_not_published(store: BlobStore) -> None:
    data = os.urandom(6 * MIB)
    claimed = digest_bytes(b"something else")
    upload_id = store.create_upload(claimed, len(data), 5 * MIB)
    parts = [
        PartEntry(1, 5 * MIB, store.upload_part(upload_id, 1, data[: 5 * MIB])),
        PartEntry(2, MIB, store.upload_part(upload_id, 2, data[5 * MIB :])),
    ]

    if store.capabilities.verifies_multipart_digest:
        with pytest.raises(DigestMismatch):
            store.complete_upload(upload_id, parts)
        assert not store.exists(claimed)
    else:
        # S3 cannot hash a multipart object: upload_file checks the sha256 before Complete
        # (test_upload_file_refuses_a_multipart_file_that_does_not_match) and readers check it after.
        store.complete_upload(upload_id, parts)
        with pytest.raises(DigestMismatch), store.open(claimed) as reader:
            reader.readall()
    store.abort_upload(upload_id)


def test_part_plans_outside_s3_limits_are_refused(store: BlobStore) -> None:
    digest = digest_bytes(b"x")
    with pytest.raises(UsageError):
        store.create_upload(digest, 100 * MIB, 4 * MIB)  # parts under 5 MiB
    with pytest.raises(UsageError):
        store.create_upload(digest, 10_001 * 5 * MIB, 5 * MIB)  # more than 10,000 parts


# -- listing and deleting --------------------------------------------------------------------------


def test_list_blobs_and_delete(store: BlobStore) -> None:
    blobs = {digest_bytes(d): d for d in (b"a", b"bb", b"ccc")}
    before = time.time()
    for digest, data in blobs.items():
        store.put(digest, data, len(data))

    listed = {entry.digest: entry for entry in store.list_blobs()}

    assert {d: e.size_bytes for d, e in listed.items()} == {d: len(v) for d, v in blobs.items()}
    assert all(
        e.modified_at.tzinfo is not None and e.modified_at.timestamp() >= before - 2 for e in listed.values()
    )
    store.delete(digest_bytes(b"bb"))
    store.delete(digest_bytes(b"bb"))  # deleting twice is fine
    assert {e.digest for e in store.list_blobs()} == {digest_bytes(b"a"), digest_bytes(b"ccc")}


# -- grants ----------------------------------------------------------------------------------------


def test_a_get_grant_opens_its_blob_and_no_other(backend: Backend) -> None:
    store = backend.store
    a, b = digest_bytes(b"blob a"), digest_bytes(b"blob b")
    store.put(a, b"blob a", 6)
    store.put(b, b"blob b", 6)
    url = store.grant_url(a, "GET", 60)

    assert backend.fetch_grant(url, "GET", None, {}) == (200, b"blob a")
    other = url.replace(a.removeprefix("sha256:"), b.removeprefix("sha256:"))
    status, body = backend.fetch_grant(other, "GET", None, {})
    assert status == 403 and body != b"blob b"


def test_a_put_grant_stores_exactly_its_blob(backend: Backend) -> None:
    store = backend.store
    digest = digest_bytes(b"granted bytes")
    url = store.grant_url(digest, "PUT", 60)
    headers = dict(store.grant_headers(digest, "PUT"))

    wrong_status, _ = backend.fetch_grant(url, "PUT", b"forged bytes!", headers)
    if store.capabilities.server_verifies_sha256:
        assert wrong_status >= 400 and not store.exists(digest)
    else:
        # A server that ignores x-amz-checksum-sha256 stores what the grant holder sends; readers
        # still refuse it, and the control plane must verify such a blob before committing it.
        assert wrong_status == 200
        with pytest.raises(DigestMismatch), store.open(digest) as reader:
            reader.readall()
        store.delete(digest)
    assert backend.fetch_grant(url, "PUT", b"granted bytes", headers)[0] == 200
    assert store.exists(digest)
    assert backend.fetch_grant(url, "GET", None, {})[0] == 403  # a PUT grant does not read


def test_an_expired_grant_is_refused(backend: Backend) -> None:
    store = backend.store
    digest = digest_bytes(b"short-lived")
    store.put(digest, b"short-lived", 11)
    # SigV4 expiry has one-second resolution, so the S3 case really waits; HMAC grants move a clock.
    # Three seconds leave room for a loaded machine between signing and the first fetch (with one
    # second, a fetch that crossed two second boundaries was refused).
    url = store.grant_url(digest, "GET", 3)

    assert backend.fetch_grant(url, "GET")[0] == 200
    assert backend.fetch_grant(url, "GET", later_s=4.1)[0] == 403


def test_a_part_grant_opens_its_part_of_its_upload_and_nothing_else(backend: Backend) -> None:
    store = backend.store
    data = os.urandom(6 * MIB)
    digest = digest_bytes(data)
    first, second = data[: 5 * MIB], data[5 * MIB :]
    upload_id = store.create_upload(digest, len(data), 5 * MIB)
    other_upload = store.create_upload(digest, len(data), 5 * MIB)
    md5 = {"Content-MD5": base64.b64encode(hashlib.md5(first).digest()).decode()}
    url = store.grant_part_url(upload_id, 1, 60)

    # Another part number, or another upload, under the same signature: refused.
    as_part_2 = url.replace("partNumber=1", "partNumber=2").replace("/parts/1?", "/parts/2?")
    assert backend.fetch_grant(as_part_2, "PUT", first, md5)[0] == 403
    _, _, raw_id = upload_id.partition(".")
    _, _, other_raw = other_upload.partition(".")
    assert backend.fetch_grant(url.replace(raw_id, other_raw), "PUT", first, md5)[0] == 403
    short = store.grant_part_url(upload_id, 1, 1)
    assert backend.fetch_grant(short, "PUT", first, md5, later_s=2.1)[0] == 403  # expired
    assert store.list_parts(upload_id) == []

    assert backend.fetch_grant(url, "PUT", first, md5)[0] == 200
    assert store.list_parts(upload_id) == [PartEntry(1, 5 * MIB, hashlib.md5(first).hexdigest())]
    store.upload_part(upload_id, 2, second)
    assert store.complete_upload(upload_id, store.list_parts(upload_id)) is WriteOutcome.CREATED
    store.abort_upload(other_upload)
