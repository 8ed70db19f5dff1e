"""Pure tests of the storage pieces around the backends: no network, no real time.

Transfers run against ``MemoryBlobStore`` wrapped to fail on a schedule, with injected ``sleep``.
"""

from __future__ import annotations

import os
import types
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError

from kiln.errors import (
    AlreadyCommitted,
    BlobNotFound,
    DigestMismatch,
    StorageRefused,
    StorageUnavailable,
    Unauthorized,
    UploadNotFound,
    UsageError,
)
from kiln.storage import (
    MAX_PARTS,
    JsonFileJournal,
    Progress,
    TransferConfig,
    UploadRecord,
    download_file,
    grants,
    open_blob_store,
    upload_file,
)
from kiln.storage.digests import digest_bytes
from kiln.storage.memory import MemoryBlobStore
from kiln.storage.policy import BlobPolicy
from kiln.storage.registry import registry
from kiln.storage.s3_errors import translate
from kiln.storage.throttle import Throttle

MIB = 1024 * 1024
CONFIG = TransferConfig(part_size_bytes=5 * MIB, multipart_threshold_bytes=5 * MIB, max_concurrency=2)
SECRET = b"s" * 32


class FlakyStore(MemoryBlobStore):
    """A memory store whose data calls fail as scheduled: ``failures[part_number]`` errors to raise."""

    def __init__(self, failures: dict[int, list[BaseException]] | None = None) -> None:
        super().__init__()
        self.failures = failures or {}
        self.part_calls: list[int] = []
        self.read_failures: list[int] = []  # byte positions at which a read breaks, once each

    def upload_part(
        self, upload_id: str, part_number: int, data: bytes, *, timeout_s: float | None = None
    ) -> str:
        self.part_calls.append(part_number)
        pending = self.failures.get(part_number)
        if pending:
            raise pending.pop(0)
        return super().upload_part(upload_id, part_number, data)

    def open(
        self, digest: str, *, offset: int = 0, hasher: Any = None, timeout_s: float | None = None
    ) -> Any:
        reader = super().open(digest, offset=offset, hasher=hasher)
        store = self
        inner_read = reader.read

        def read(n: int = -1) -> bytes:
            if store.read_failures and reader.position >= store.read_failures[0]:
                store.read_failures.pop(0)
                raise StorageUnavailable("connection reset mid-body")
            return inner_read(min(n, 256 * 1024))

        reader.read = read  # type: ignore[method-assign]
        return reader


def _file(tmp_path: Path, size: int) -> tuple[Path, str, bytes]:
    data = os.urandom(size)
    path = tmp_path / "spooled.bin"
    path.write_bytes(data)
    return path, digest_bytes(data), data


# -- transfer: retries, first error wins, resume ---------------------------------------------------


def test_a_failing_part_is_retried_with_backoff_and_the_upload_completes(tmp_path: Path) -> None:
    path, digest, data = _file(tmp_path, 16 * MIB)
    store = FlakyStore({2: [StorageUnavailable("reset"), StorageUnavailable("reset")]})
    sleeps: list[float] = []

    result = upload_file(store, path, digest, len(data), config=CONFIG, sleep=sleeps.append)

    assert (result.parts_total, result.parts_uploaded, result.existed) == (4, 4, False)
    assert store.part_calls.count(2) == 3
    assert len(sleeps) == 2 and 0 <= sleeps[0] <= 0.2 and 0 <= sleeps[1] <= 0.4  # full jitter, doubling
    with store.open(digest) as reader:
        assert reader.readall() == data


def test_a_part_that_keeps_failing_fails_the_upload_which_stays_resumable(tmp_path: Path) -> None:
    path, digest, data = _file(tmp_path, 31 * MIB)
    store = FlakyStore({2: [StorageUnavailable("down")] * 5})
    journal = JsonFileJournal(tmp_path / "spool")

    with pytest.raises(StorageUnavailable):
        upload_file(store, path, digest, len(data), config=CONFIG, journal=journal, sleep=lambda _: None)

    assert store.part_calls.count(2) == 5  # part_attempts
    assert len(set(store.part_calls)) < 7  # the first fatal error stopped the parts not yet sent
    record = journal.load(digest)
    assert record is not None and [u.upload_id for u in store.list_uploads()] == [record.upload_id]
    done_before = {p.part_number for p in store.list_parts(record.upload_id)}

    store.part_calls.clear()
    result = upload_file(store, path, digest, len(data), config=CONFIG, journal=journal)

    assert result.parts_resumed == len(done_before)
    assert sorted(store.part_calls) == sorted(set(range(1, 8)) - done_before)
    assert journal.load(digest) is None and list(store.list_uploads()) == []


def test_a_refusal_is_not_retried(tmp_path: Path) -> None:
    path, digest, data = _file(tmp_path, 11 * MIB)
    store = FlakyStore({1: [StorageRefused("AccessDenied")]})

    with pytest.raises(StorageRefused):
        upload_file(store, path, digest, len(data), config=CONFIG, sleep=lambda _: pytest.fail("slept"))

    assert store.part_calls.count(1) == 1


def test_a_resumed_part_is_kept_only_if_its_etag_matches_the_local_bytes(tmp_path: Path) -> None:
    path, digest, data = _file(tmp_path, 11 * MIB)
    store = FlakyStore()
    journal = JsonFileJournal(tmp_path / "spool")
    upload_id = store.create_upload(digest, len(data), 5 * MIB)
    store.upload_part(upload_id, 1, data[: 5 * MIB])
    store.upload_part(upload_id, 2, os.urandom(5 * MIB))  # right size, wrong bytes
    journal.save(UploadRecord(digest, len(data), 5 * MIB, upload_id, 0.0))
    store.part_calls.clear()

    result = upload_file(store, path, digest, len(data), config=CONFIG, journal=journal)

    assert (result.parts_resumed, result.parts_uploaded) == (1, 2)
    assert sorted(store.part_calls) == [2, 3]


def test_a_journal_record_of_a_vanished_upload_starts_afresh(tmp_path: Path) -> None:
    path, digest, data = _file(tmp_path, 11 * MIB)
    store = FlakyStore()
    journal = JsonFileJournal(tmp_path / "spool")
    journal.save(UploadRecord(digest, len(data), 5 * MIB, "0" * 64 + ".gone", 0.0))

    result = upload_file(store, path, digest, len(data), config=CONFIG, journal=journal)

    assert (result.parts_resumed, result.parts_uploaded) == (0, 3)


def test_progress_reports_every_part_and_can_stop_the_upload(tmp_path: Path) -> None:
    path, digest, data = _file(tmp_path, 21 * MIB)
    seen: list[Progress] = []

    upload_file(FlakyStore(), path, digest, len(data), config=CONFIG, progress=seen.append)
    assert sorted(p.part_number or 0 for p in seen) == [1, 2, 3, 4, 5]
    assert seen[-1].bytes_done == len(data) and seen[-1].parts_done == 5

    def stop(progress: Progress) -> None:
        raise KeyError("cancelled by the caller")

    with pytest.raises(KeyError):
        upload_file(FlakyStore(), path, digest, len(data), config=CONFIG, progress=stop)


def test_a_file_of_the_wrong_size_is_refused_before_anything_is_sent(tmp_path: Path) -> None:
    path, digest, _ = _file(tmp_path, 100)
    store = FlakyStore()

    with pytest.raises(DigestMismatch):
        upload_file(store, path, digest, 99, config=CONFIG)
    assert list(store.list_uploads()) == [] and not store.exists(digest)


def test_a_download_broken_mid_body_resumes_from_the_last_byte(tmp_path: Path) -> None:
    data = os.urandom(3 * MIB)
    digest = digest_bytes(data)
    store = FlakyStore()
    store.put(digest, data, len(data))
    store.read_failures = [MIB, 2 * MIB]
    sleeps: list[float] = []

    result = download_file(store, digest, tmp_path / "out", sleep=sleeps.append)

    assert (result.attempts, len(sleeps)) == (3, 2)
    assert result.resumed_bytes >= 3 * MIB  # about 1 MiB kept at the first break, 2 MiB at the second
    assert (tmp_path / "out").read_bytes() == data


def test_download_of_a_missing_blob_is_not_retried(tmp_path: Path) -> None:
    with pytest.raises(BlobNotFound):
        download_file(
            FlakyStore(), digest_bytes(b"none"), tmp_path / "out", sleep=lambda _: pytest.fail("slept")
        )


# -- config ----------------------------------------------------------------------------------------


def test_transfer_config_reports_every_problem_at_once() -> None:
    with pytest.raises(UsageError) as caught:
        TransferConfig(part_size_bytes=MIB, max_concurrency=0, part_attempts=0, stall_timeout_s=0)
    for name in ("part_size_bytes", "max_concurrency", "part_attempts", "stall_timeout_s"):
        assert name in caught.value.message


def test_part_size_is_raised_to_whole_mib_to_stay_within_10000_parts() -> None:
    config = TransferConfig()
    assert config.part_size_for(78 * 1024 * MIB) == 8 * MIB  # 9,984 parts: fine
    assert config.part_size_for(80 * 1024 * MIB) == 9 * MIB  # 10,240 would be too many
    big = 100 * 1024 * MIB
    part = config.part_size_for(big)
    assert part % MIB == 0 and part > 8 * MIB and -(-big // part) <= MAX_PARTS
    assert config.backoff_s(1, 0.999) < 0.2 and config.backoff_s(20, 0.999) <= config.backoff_cap_s


# -- throttle --------------------------------------------------------------------------------------


def test_the_throttle_spaces_sends_to_the_rate_without_real_sleeping() -> None:
    now = [100.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)

    throttle = Throttle(10 * MIB, clock=lambda: now[0], sleep=sleep)
    for _ in range(3):
        throttle.acquire(10 * MIB)

    assert slept == [1.0, 2.0]  # the first goes at once, then one second per 10 MiB


# -- grants ----------------------------------------------------------------------------------------


def test_a_grant_covers_one_method_one_blob_until_it_expires() -> None:
    a, b = digest_bytes(b"a"), digest_bytes(b"b")
    token = grants.sign("GET", a, 1_000, SECRET)

    grants.verify(token, "GET", a, 1_000, SECRET, now=999)
    for method, digest, expires_at, now in [
        ("PUT", a, 1_000, 999),
        ("GET", b, 1_000, 999),
        ("GET", a, 2_000, 999),
    ]:
        with pytest.raises(Unauthorized):
            grants.verify(token, method, digest, expires_at, SECRET, now=now)
    with pytest.raises(Unauthorized, match="expired"):
        grants.verify(token, "GET", a, 1_000, SECRET, now=1_000)
    with pytest.raises(Unauthorized):
        grants.verify(token, "GET", a, 1_000, b"another secret, also 32 bytes..", now=999)


def test_grant_urls_round_trip_and_refuse_tampering() -> None:
    digest = digest_bytes(b"a")
    url = grants.grant_url("http://kiln:8080/v1", "GET", digest, 1_000, SECRET)

    assert url.startswith("http://kiln:8080/v1/blobs/sha256/")
    assert grants.verify_url(url, "GET", SECRET, now=10) == digest
    for bad in [url.replace("expires=1000", "expires=9999"), url.split("&sig=")[0], "http://kiln/elsewhere"]:
        with pytest.raises(Unauthorized):
            grants.verify_url(bad, "GET", SECRET, now=10)


def test_a_part_grant_covers_one_part_of_one_upload_until_it_expires() -> None:
    upload_id = "ab" * 32 + ".00112233aabbccdd"
    url = grants.part_grant_url("", upload_id, 3, 1_000, SECRET)

    assert url.startswith(f"/uploads/{upload_id}/parts/3?")
    assert grants.verify_part_url(url, "PUT", SECRET, now=999) == (upload_id, 3)
    other_upload = "cd" * 32 + ".00112233aabbccdd"
    for bad in [
        url.replace("/parts/3?", "/parts/4?"),
        url.replace(upload_id, other_upload),
        url.replace("expires=1000", "expires=9999"),
        url.split("&sig=")[0],
    ]:
        with pytest.raises(Unauthorized):
            grants.verify_part_url(bad, "PUT", SECRET, now=999)
    with pytest.raises(Unauthorized, match="PUT"):
        grants.verify_part_url(url, "GET", SECRET, now=999)
    with pytest.raises(Unauthorized, match="expired"):
        grants.verify_part_url(url, "PUT", SECRET, now=1_000)
    # A part token is no blob token, whatever it is presented as.
    token = url.split("sig=")[1]
    with pytest.raises(Unauthorized):
        grants.verify(token, "PUT", "sha256:" + "ab" * 32, 1_000, SECRET, now=999)


def test_a_grant_lasts_at_least_what_was_asked() -> None:
    assert grants.expiry(100.2, 1) == 102
    assert grants.expiry(100.0, 1) == 101


def test_a_blob_policy_keeps_blobs_longer_than_upload_sessions() -> None:
    BlobPolicy()  # the defaults are consistent
    with pytest.raises(UsageError, match="blob_grace_s"):
        BlobPolicy(upload_lease_s=3600, blob_grace_s=60)
    with pytest.raises(UsageError, match="grant_ttl_s"):
        BlobPolicy(grant_ttl_s=0)


def test_a_blob_policy_reads_its_settings_from_the_environment() -> None:
    policy = BlobPolicy.from_env(
        {"KILN_GRANT_TTL_S": "120", "KILN_BLOB_GRACE_S": "7200", "KILN_GC_INTERVAL_S": ""}
    )
    assert (policy.grant_ttl_s, policy.blob_grace_s, policy.gc_interval_s) == (
        120,
        7200.0,
        BlobPolicy().gc_interval_s,
    )
    with pytest.raises(UsageError, match="KILN_UPLOAD_LEASE_S"):
        BlobPolicy.from_env({"KILN_UPLOAD_LEASE_S": "soon"})


# -- registry and URLs -----------------------------------------------------------------------------


def test_unknown_schemes_are_refused_by_name() -> None:
    with pytest.raises(UsageError, match="gs"):
        open_blob_store("gs://bucket/prefix")


def test_the_registry_is_read_only() -> None:
    assert isinstance(registry, types.MappingProxyType)
    with pytest.raises(TypeError):
        registry["ftp"] = registry["file"]  # type: ignore[index]


def test_named_memory_stores_are_shared_and_anonymous_ones_are_not() -> None:
    assert open_blob_store("memory://shared-name") is open_blob_store("memory://shared-name")
    assert open_blob_store("memory://") is not open_blob_store("memory://")


@pytest.mark.parametrize("url", ["file://relative/path", "file:///tmp/x?colour=blue", "file://host/tmp"])
def test_malformed_file_urls_are_usage_errors(url: str) -> None:
    with pytest.raises(UsageError):
        open_blob_store(url)


# -- S3 error translation --------------------------------------------------------------------------


def _client_error(code: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "Op")


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (_client_error("NoSuchKey", 404), BlobNotFound),
        (_client_error("404", 404), BlobNotFound),
        (_client_error("NoSuchUpload", 404), UploadNotFound),
        (_client_error("PreconditionFailed", 412), AlreadyCommitted),
        (_client_error("BadDigest", 400), DigestMismatch),
        (_client_error("SlowDown", 503), StorageUnavailable),
        (_client_error("InternalError", 500), StorageUnavailable),
        (_client_error("AccessDenied", 403), StorageRefused),
        (_client_error("NoSuchBucket", 404), StorageRefused),
        (EndpointConnectionError(endpoint_url="http://x"), StorageUnavailable),
        (ReadTimeoutError(endpoint_url="http://x"), StorageUnavailable),
        (ConnectionResetError(), StorageUnavailable),
    ],
)
def test_botocore_errors_map_into_the_kiln_tree(error: BaseException, expected: type) -> None:
    translated = translate(error, "GET x")
    assert type(translated) is expected
