"""Upload and download whole files: parts in parallel, retried one by one, resumable after a crash.

Which layer retries what:

* ``upload_file`` / ``download_file`` retry the *data* calls: each part (``upload_part``), a
  single ``put``, and a GET (resumed by byte range from where it broke). Up to
  ``part_attempts`` tries each, exponential backoff with full jitter, transient errors only
  (``StorageUnavailable`` itself, and a part the server says arrived damaged).
* Control calls (``stat``, ``create_upload``, ``list_parts``, ``complete_upload``) are called
  once here; the S3 backend's botocore client retries those, and a local disk does not need to.
* The first fatal error stops the other parts and is raised. The multipart upload is *not*
  aborted: its record stays in the journal so the next attempt resumes it, and the janitor
  aborts it if nobody does.

Resume: the uploader writes ``(upload_id, part_size, digest)`` to an ``UploadJournal`` before it
sends any part. A replacement uploader (say, after the first was SIGKILLed) finds the record,
calls ListParts, accepts each listed part whose size and ETag equal the size and MD5 of its own
bytes for that part, uploads only the others, and completes.

The file's sha256 is computed while its parts are read (in order, by the submitting thread); a
file that does not hash to its digest is never completed: its upload is aborted.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import random
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from kiln.errors import (
    BlobNotFound,
    Conflict,
    DigestMismatch,
    IntegrityError,
    StorageRefused,
    StorageUnavailable,
    UploadNotFound,
)
from kiln.storage.base import BlobStore, PartEntry, WriteOutcome
from kiln.storage.config import TransferConfig
from kiln.storage.digests import digest_to_hex
from kiln.storage.executor import BoundedExecutor, Coordinator
from kiln.storage.fsutil import fsync_dir
from kiln.storage.journal import UploadJournal, UploadRecord
from kiln.storage.throttle import Throttle

__all__ = ["DownloadResult", "Progress", "UploadResult", "download_file", "is_retryable", "upload_file"]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")
_READ_CHUNK_BYTES = 1024 * 1024


@dataclass(frozen=True)
class UploadResult:
    """What ``upload_file`` did."""

    parts_total: int  # parts in the plan (1 for a single put)
    parts_uploaded: int  # parts sent by this call
    parts_resumed: int  # parts an earlier attempt had sent, verified and kept
    uploaded_bytes: int  # bytes sent by this call
    existed: bool  # the blob was already stored (or another writer won): nothing was published by us


@dataclass(frozen=True)
class DownloadResult:
    """What ``download_file`` did."""

    size_bytes: int
    attempts: int  # GET requests made (1 if nothing broke)
    resumed_bytes: int  # bytes kept across broken GETs instead of being fetched again


@dataclass(frozen=True)
class Progress:
    """One progress report; for uploads, sent after each part is done (uploaded or resumed)."""

    bytes_done: int
    bytes_total: int
    parts_done: int
    parts_total: int
    part_number: int | None  # the part just finished (None for downloads and single puts)
    resumed: bool  # the part was already on the server and was not sent again


ProgressCallback = Callable[[Progress], None]


def is_retryable(exc: BaseException) -> bool:
    """Return whether a storage error is transient (network, 5xx, throttling) and worth retrying."""
    if isinstance(exc, BlobNotFound | UploadNotFound | StorageRefused):
        return False  # answers, not faults
    return isinstance(exc, StorageUnavailable)


def upload_file(
    store: BlobStore,
    path: str | os.PathLike[str],
    digest: str,
    size_bytes: int,
    *,
    config: TransferConfig | None = None,
    journal: UploadJournal | None = None,
    progress: ProgressCallback | None = None,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
    rng: random.Random | None = None,
) -> UploadResult:
    """Upload the file at ``path`` as blob ``digest``, resuming an earlier attempt if the journal has one.

    Parameters
    ----------
    store
        Where to upload.
    path, digest, size_bytes
        The spooled file and what it must hash to. The file must not change during the upload.
    config
        Part size, concurrency, retries (default ``TransferConfig()``).
    journal
        Records the multipart upload for resumption; None disables resuming.
    progress
        Called after each finished part (from worker threads, one call at a time). If it raises,
        the upload stops with that error.
    clock, sleep, rng
        Injected time, sleeping and jitter, for tests.

    Returns
    -------
    UploadResult
        ``existed`` is True if the blob was already stored: nothing was sent.

    Raises
    ------
    DigestMismatch
        If the file is not ``size_bytes`` long or does not hash to ``digest``.
    StorageUnavailable
        If a part still fails after ``part_attempts`` tries (the upload stays resumable), or
        another storage error that is not transient.
    """
    config = config or TransferConfig()
    digest_to_hex(digest)
    actual_size = os.stat(path).st_size
    if actual_size != size_bytes:
        raise DigestMismatch(f"{path} is {actual_size} bytes, not the {size_bytes} of {digest}")
    retrier = _Retrier(config, sleep, rng or random.Random())
    throttle = (
        Throttle(config.max_bandwidth_bytes_s, clock=time.monotonic, sleep=sleep)
        if config.max_bandwidth_bytes_s
        else None
    )

    stored = _stored_size(store, digest)
    if stored is not None:
        if stored != size_bytes:
            raise IntegrityError(f"stored blob {digest} has {stored} bytes, the file has {size_bytes}")
        _forget(store, journal, digest)
        return UploadResult(0, 0, 0, 0, existed=True)

    if size_bytes <= config.multipart_threshold_bytes:
        return _put_whole(store, path, digest, size_bytes, config, retrier, throttle, progress)
    return _Multipart(
        store, path, digest, size_bytes, config, journal, progress, clock, retrier, throttle
    ).run()


def download_file(
    store: BlobStore,
    digest: str,
    dest_path: str | os.PathLike[str],
    *,
    config: TransferConfig | None = None,
    progress: ProgressCallback | None = None,
    sleep: Callable[[float], None] = time.sleep,
    rng: random.Random | None = None,
) -> DownloadResult:
    """Download blob ``digest`` to ``dest_path``, verified, via a temporary file renamed into place.

    A GET that breaks is resumed by byte range from the last byte written, continuing the same
    sha256, so the whole file is verified even across retries. ``dest_path`` only ever appears
    complete and verified.

    Raises
    ------
    BlobNotFound
        If the blob is not stored.
    DigestMismatch
        If the stored bytes do not hash to ``digest`` (nothing is left at ``dest_path``).
    StorageUnavailable
        If the GET still fails after ``part_attempts`` tries.
    """
    config = config or TransferConfig()
    digest_to_hex(digest)
    retrier = _Retrier(config, sleep, rng or random.Random())
    dest = Path(dest_path)
    tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(6)}.download")
    hasher = hashlib.sha256()
    written = attempts = resumed = 0
    try:
        with open(tmp, "xb") as out:
            while True:
                attempts += 1
                if written:
                    resumed += written
                try:
                    # The reader continues `hasher`, which holds exactly the bytes already written.
                    with store.open(
                        digest, offset=written, hasher=hasher, timeout_s=config.stall_timeout_s
                    ) as reader:
                        while chunk := reader.read(_READ_CHUNK_BYTES):
                            out.write(chunk)
                            written += len(chunk)
                            if progress is not None:
                                progress(Progress(written, reader.size_bytes, 0, 0, None, False))
                    break
                except Exception as exc:
                    if not is_retryable(exc) or attempts >= config.part_attempts:
                        raise
                    retrier.wait(attempts, exc, f"GET {digest} at byte {written}")
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, dest)
        fsync_dir(dest.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    return DownloadResult(written, attempts, resumed)


# -- internals -------------------------------------------------------------------------------------


class _Retrier:
    """Retry policy for data calls: exponential backoff with full jitter; sleeping is injected."""

    def __init__(self, config: TransferConfig, sleep: Callable[[float], None], rng: random.Random) -> None:
        self._config = config
        self._sleep = sleep
        self._rng = rng
        self._rng_lock = threading.Lock()

    def wait(self, attempt: int, exc: BaseException, what: str) -> None:
        with self._rng_lock:
            draw = self._rng.random()
        delay = self._config.backoff_s(attempt, draw)
        logger.warning(
            "A storage call failed and will be retried.",
            extra={
                "action": "storage_retry",
                "what": what,
                "attempt": attempt,
                "delay_s": delay,
                "error": str(exc),
            },
        )
        self._sleep(delay)

    def run(
        self, call: Callable[[], _T], what: str, *, retry_if: Callable[[BaseException], bool] = is_retryable
    ) -> _T:
        attempt = 1
        while True:
            try:
                return call()
            except Exception as exc:
                if not retry_if(exc) or attempt >= self._config.part_attempts:
                    raise
                self.wait(attempt, exc, what)
                attempt += 1


def _stored_size(store: BlobStore, digest: str) -> int | None:
    try:
        return store.stat(digest)
    except BlobNotFound:
        return None


def _forget(store: BlobStore, journal: UploadJournal | None, digest: str) -> None:
    """The blob is stored: drop a leftover journal record and its upload (a no-op if completed)."""
    if journal is None:
        return
    record = journal.load(digest)
    if record is not None:
        store.abort_upload(record.upload_id)
        journal.delete(digest)


def _put_whole(
    store: BlobStore,
    path: str | os.PathLike[str],
    digest: str,
    size_bytes: int,
    config: TransferConfig,
    retrier: _Retrier,
    throttle: Throttle | None,
    progress: ProgressCallback | None,
) -> UploadResult:
    def attempt() -> WriteOutcome:
        if throttle is not None:
            throttle.acquire(size_bytes)
        return store.put(digest, path, size_bytes, timeout_s=config.stall_timeout_s)

    outcome = retrier.run(attempt, f"put {digest}")
    if progress is not None:
        progress(Progress(size_bytes, size_bytes, 1, 1, None, False))
    existed = outcome is WriteOutcome.EXISTED
    return UploadResult(1, 0 if existed else 1, 0, 0 if existed else size_bytes, existed)


class _Multipart:
    """One multipart upload: open or resume the session, send the missing parts, complete."""

    def __init__(
        self,
        store: BlobStore,
        path: str | os.PathLike[str],
        digest: str,
        size_bytes: int,
        config: TransferConfig,
        journal: UploadJournal | None,
        progress: ProgressCallback | None,
        clock: Callable[[], float],
        retrier: _Retrier,
        throttle: Throttle | None,
    ) -> None:
        self._store = store
        self._path = path
        self._digest = digest
        self._size = size_bytes
        self._config = config
        self._journal = journal
        self._progress = progress
        self._clock = clock
        self._retrier = retrier
        self._throttle = throttle
        self._coordinator = Coordinator()
        self._lock = threading.Lock()  # guards the fields below and serializes progress calls
        self._done: dict[int, PartEntry] = {}
        self._uploaded = 0
        self._resumed = 0
        self._uploaded_bytes = 0
        self._bytes_done = 0
        self._parts_total = 0

    def run(self) -> UploadResult:
        part_size, upload_id, remote = self._open_session()
        self._parts_total = -(-self._size // part_size)
        plan = [
            (n, min(part_size, self._size - (n - 1) * part_size)) for n in range(1, self._parts_total + 1)
        ]
        sha256 = hashlib.sha256()
        executor = BoundedExecutor(self._config.max_concurrency, self._config.max_concurrency)
        try:
            with open(self._path, "rb") as f:
                for part_number, length in plan:
                    if self._coordinator.failed:
                        break
                    data = f.read(length)
                    if len(data) != length:
                        raise DigestMismatch(f"{self._path} shrank while it was uploaded")
                    # Hashing in order, here, is what lets the whole file be checked before Complete.
                    sha256.update(data)
                    listed = remote.get(part_number, [])
                    executor.submit(self._send_part, upload_id, part_number, data, listed)
                else:
                    if f.read(1):
                        raise DigestMismatch(f"{self._path} grew while it was uploaded")
        except BaseException as exc:
            self._coordinator.fail(exc)  # stop the parts in flight at their next check
            raise
        finally:
            executor.shutdown(wait=True)
        if self._coordinator.error is not None:
            raise self._coordinator.error
        if "sha256:" + sha256.hexdigest() != self._digest:
            # These bytes can never be completed under this address: drop the upload.
            self._store.abort_upload(upload_id)
            if self._journal is not None:
                self._journal.delete(self._digest)
            raise DigestMismatch(f"{self._path} hashes to sha256:{sha256.hexdigest()}, not {self._digest}")

        parts = [self._done[n] for n, _ in plan]
        try:
            outcome = self._store.complete_upload(upload_id, parts)
        except Conflict:
            # S3's 409 ConditionalRequestConflict: a concurrent write to the key. If that write
            # stored our blob, fine; otherwise fail, and the next attempt starts a fresh upload.
            if _stored_size(self._store, self._digest) != self._size:
                if self._journal is not None:
                    self._journal.delete(self._digest)
                raise
            outcome = WriteOutcome.EXISTED
        if self._journal is not None:
            self._journal.delete(self._digest)
        logger.info(
            "Uploaded a blob in parts.",
            extra={
                "action": "blob_uploaded",
                "digest": self._digest,
                "parts_total": len(plan),
                "parts_uploaded": self._uploaded,
                "parts_resumed": self._resumed,
                "outcome": str(outcome),
            },
        )
        return UploadResult(
            len(plan), self._uploaded, self._resumed, self._uploaded_bytes, outcome is WriteOutcome.EXISTED
        )

    def _open_session(self) -> tuple[int, str, dict[int, list[PartEntry]]]:
        """Resume the journal's upload if it is still open on the server, or start a new one."""
        record = self._journal.load(self._digest) if self._journal is not None else None
        if record is not None and record.size_bytes == self._size:
            try:
                listed = self._store.list_parts(record.upload_id)
            except UploadNotFound:
                pass  # completed or aborted since: start afresh
            else:
                logger.info(
                    "Resuming a multipart upload.",
                    extra={"action": "upload_resumed", "digest": self._digest, "parts_listed": len(listed)},
                )
                by_number: dict[int, list[PartEntry]] = {}
                for part in listed:
                    by_number.setdefault(part.part_number, []).append(part)
                return record.part_size_bytes, record.upload_id, by_number
        part_size = self._config.part_size_for(self._size)
        upload_id = self._store.create_upload(self._digest, self._size, part_size)
        if self._journal is not None:
            # Written before any part is sent: a crash from here on leaves a resumable upload.
            self._journal.save(UploadRecord(self._digest, self._size, part_size, upload_id, self._clock()))
        return part_size, upload_id, {}

    def _send_part(self, upload_id: str, part_number: int, data: bytes, listed: list[PartEntry]) -> None:
        try:
            if listed:
                # Accept a listed part only if it is exactly our bytes. (SeaweedFS 4.48 lists every
                # version of a re-uploaded part; any version that matches will complete correctly.)
                md5 = hashlib.md5(data).hexdigest()
                for candidate in listed:
                    if candidate.size_bytes == len(data) and candidate.etag == md5:
                        self._finish(candidate, resumed=True)
                        return

            def attempt() -> str:
                if self._coordinator.failed:
                    raise _Cancelled
                if self._throttle is not None:
                    self._throttle.acquire(len(data))
                return self._store.upload_part(
                    upload_id, part_number, data, timeout_s=self._config.stall_timeout_s
                )

            etag = self._retrier.run(
                attempt, f"part {part_number} of {self._digest}", retry_if=_part_retryable
            )
            self._finish(PartEntry(part_number, len(data), etag), resumed=False)
        except _Cancelled:
            return
        except BaseException as exc:
            self._coordinator.fail(exc)

    def _finish(self, part: PartEntry, *, resumed: bool) -> None:
        with self._lock:
            self._done[part.part_number] = part
            self._bytes_done += part.size_bytes
            if resumed:
                self._resumed += 1
            else:
                self._uploaded += 1
                self._uploaded_bytes += part.size_bytes
            if self._progress is not None:
                self._progress(
                    Progress(
                        self._bytes_done,
                        self._size,
                        len(self._done),
                        self._parts_total,
                        part.part_number,
                        resumed,
                    )
                )


class _Cancelled(Exception):
    """Another part failed first; this one stops quietly."""


def _part_retryable(exc: BaseException) -> bool:
    # The backend sends Content-MD5 of the very bytes it sends, so a part the server calls
    # damaged was damaged on the way: sending it again is the fix.
    return is_retryable(exc) or isinstance(exc, DigestMismatch)
