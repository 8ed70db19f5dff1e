"""``memory://``: an in-process blob store for unit tests, with the same semantics as the others.

``memory://<name>`` returns the same store for the same name within a process (like fsspec's
memory filesystem); ``memory://`` alone returns a fresh, private store.
"""

from __future__ import annotations

import hashlib
import io
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import urlsplit

from kiln.errors import BlobNotFound, DigestMismatch, IntegrityError, UploadNotFound, UsageError
from kiln.storage import grants
from kiln.storage.base import (
    BlobEntry,
    BlobSource,
    Capabilities,
    GrantMethod,
    Hasher,
    PartEntry,
    UploadEntry,
    WriteOutcome,
)
from kiln.storage.digests import digest_from_hex, digest_to_hex
from kiln.storage.multipart import (
    check_completion,
    check_part_number,
    check_part_plan,
    make_upload_id,
    split_upload_id,
)
from kiln.storage.reader import VerifyingReader
from kiln.storage.sources import iter_chunks, open_source

__all__ = ["MemoryBlobStore"]

_NAMED: dict[str, MemoryBlobStore] = {}
_NAMED_LOCK = threading.Lock()


@dataclass
class _Blob:
    data: bytes
    modified_at: float


@dataclass
class _Upload:
    hex_digest: str
    size_bytes: int
    initiated_at: float
    parts: dict[int, tuple[bytes, str]] = field(default_factory=dict)  # n -> (data, md5 hex)


class MemoryBlobStore:
    """Blobs in a dict, guarded by one lock. ``clock`` (Unix seconds) stamps writes and grants."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        grant_secret: bytes | None = None,
        grant_base_url: str = "",
    ) -> None:
        self._clock = clock
        self._blobs: dict[str, _Blob] = {}
        self._uploads: dict[str, _Upload] = {}
        self._lock = threading.Lock()
        # A per-instance random secret is enough for a store that lives and dies with the process.
        self.grant_secret = grant_secret if grant_secret is not None else secrets.token_bytes(32)
        self._grant_base_url = grant_base_url

    @classmethod
    def from_url(cls, url: str, **options: object) -> MemoryBlobStore:
        """Open ``memory://[name]``; see the module docstring."""
        parts = urlsplit(url)
        if parts.scheme != "memory" or parts.query:
            raise UsageError(f"not a memory store URL: {url!r}")
        name = (parts.netloc + parts.path).strip("/")
        if not name:
            return cls(**options)  # type: ignore[arg-type]
        with _NAMED_LOCK:
            if name not in _NAMED:
                _NAMED[name] = cls(**options)  # type: ignore[arg-type]
            return _NAMED[name]

    @property
    def capabilities(self) -> Capabilities:
        """Everything is checked in process; there is no lifecycle rule to install."""
        return Capabilities(
            conditional_create=True,
            conditional_complete=True,
            server_verifies_sha256=True,
            verifies_multipart_digest=True,
            lifecycle_backstop=None,
        )

    # -- blobs -----------------------------------------------------------------------------------

    def exists(self, digest: str) -> bool:
        """Return whether the blob is stored."""
        with self._lock:
            return digest_to_hex(digest) in self._blobs

    def stat(self, digest: str) -> int:
        """Return the blob's size; raise BlobNotFound."""
        with self._lock:
            blob = self._blobs.get(digest_to_hex(digest))
        if blob is None:
            raise BlobNotFound(f"no blob {digest}")
        return len(blob.data)

    def put(
        self, digest: str, source: BlobSource, size_bytes: int, *, timeout_s: float | None = None
    ) -> WriteOutcome:
        """Store the blob create-only, verifying size and digest before it becomes visible."""
        hex_digest = digest_to_hex(digest)
        with self._lock:
            existing = self._blobs.get(hex_digest)
        if existing is not None:
            return self._existing(digest, existing, size_bytes)
        data = _read_source(source, size_bytes, digest)
        if hashlib.sha256(data).hexdigest() != hex_digest:
            raise DigestMismatch(f"the bytes written for {digest} hash to something else")
        return self._publish(hex_digest, data)

    def open(
        self,
        digest: str,
        *,
        offset: int = 0,
        hasher: Hasher | None = None,
        timeout_s: float | None = None,
    ) -> VerifyingReader:
        """Open the blob for a verified streaming read."""
        with self._lock:
            blob = self._blobs.get(digest_to_hex(digest))
        if blob is None:
            raise BlobNotFound(f"no blob {digest}")
        raw = io.BytesIO(blob.data)
        raw.seek(offset)
        return VerifyingReader(raw, digest=digest, size_bytes=len(blob.data), offset=offset, hasher=hasher)

    def delete(self, digest: str) -> None:
        """Delete the blob if stored."""
        with self._lock:
            self._blobs.pop(digest_to_hex(digest), None)

    def list_blobs(self) -> Iterator[BlobEntry]:
        """Yield every blob."""
        with self._lock:
            snapshot = list(self._blobs.items())
        for hex_digest, blob in snapshot:
            yield BlobEntry(digest_from_hex(hex_digest), len(blob.data), _utc(blob.modified_at))

    def corrupt(self, digest: str, data: bytes) -> None:
        """Replace a stored blob's bytes behind the store's back (tests of read verification)."""
        with self._lock:
            self._blobs[digest_to_hex(digest)].data = data

    # -- multipart -------------------------------------------------------------------------------

    def create_upload(self, digest: str, size_bytes: int, part_size_bytes: int) -> str:
        """Start a multipart upload."""
        hex_digest = digest_to_hex(digest)
        check_part_plan(size_bytes, part_size_bytes)
        upload_id = make_upload_id(hex_digest, secrets.token_hex(8))
        with self._lock:
            self._uploads[upload_id] = _Upload(hex_digest, size_bytes, self._clock())
        return upload_id

    def upload_part(
        self, upload_id: str, part_number: int, data: bytes, *, timeout_s: float | None = None
    ) -> str:
        """Store (or replace) one part and return its MD5."""
        check_part_number(part_number)
        etag = hashlib.md5(data).hexdigest()
        with self._lock:
            self._upload(upload_id).parts[part_number] = (bytes(data), etag)
        return etag

    def list_parts(self, upload_id: str) -> list[PartEntry]:
        """Return the uploaded parts, ascending."""
        with self._lock:
            parts = dict(self._upload(upload_id).parts)
        return [PartEntry(n, len(data), etag) for n, (data, etag) in sorted(parts.items())]

    def complete_upload(self, upload_id: str, parts: Sequence[PartEntry]) -> WriteOutcome:
        """Assemble the parts, verify the digest, publish create-only."""
        total = check_completion(parts)
        hex_digest, _ = split_upload_id(upload_id)
        with self._lock:
            upload = self._uploads.get(upload_id)
            existing = self._blobs.get(hex_digest)
            if upload is None:
                if existing is not None and len(existing.data) == total:
                    return WriteOutcome.EXISTED  # an earlier Complete whose answer was lost
                raise UploadNotFound(f"no such upload: {upload_id}")
            stored = dict(upload.parts)
        chunks = []
        for part in parts:
            data, etag = stored.get(part.part_number, (b"", ""))
            if etag != part.etag or len(data) != part.size_bytes:
                raise IntegrityError(
                    f"part {part.part_number} of {upload_id} does not match its ETag and size"
                )
            chunks.append(data)
        data = b"".join(chunks)
        if len(data) != upload.size_bytes or hashlib.sha256(data).hexdigest() != hex_digest:
            raise DigestMismatch(f"the parts of {upload_id} do not assemble to sha256:{hex_digest}")
        outcome = self._publish(hex_digest, data)
        with self._lock:
            self._uploads.pop(upload_id, None)
        return outcome

    def abort_upload(self, upload_id: str) -> None:
        """Drop the upload and its parts; unknown ids are fine."""
        with self._lock:
            self._uploads.pop(upload_id, None)

    def list_uploads(self) -> Iterator[UploadEntry]:
        """Yield the open uploads."""
        with self._lock:
            snapshot = list(self._uploads.items())
        for upload_id, upload in snapshot:
            yield UploadEntry(upload_id, digest_from_hex(upload.hex_digest), _utc(upload.initiated_at))

    # -- grants ----------------------------------------------------------------------------------

    def grant_url(self, digest: str, method: GrantMethod, expires_s: int) -> str:
        """Return an HMAC-signed URL for the control plane to serve (see ``grants``)."""
        expires_at = grants.expiry(self._clock(), expires_s)
        return grants.grant_url(self._grant_base_url, method, digest, expires_at, self.grant_secret)

    def grant_part_url(self, upload_id: str, part_number: int, expires_s: int) -> str:
        """Return an HMAC-signed URL for one part, for the control plane's part endpoint to serve."""
        check_part_number(part_number)
        expires_at = grants.expiry(self._clock(), expires_s)
        return grants.part_grant_url(
            self._grant_base_url, upload_id, part_number, expires_at, self.grant_secret
        )

    def grant_headers(self, digest: str, method: GrantMethod) -> Mapping[str, str]:
        """No extra headers: the control plane verifies the bytes itself."""
        digest_to_hex(digest)
        return {}

    def close(self) -> None:
        """Nothing to release."""

    # -- internals -------------------------------------------------------------------------------

    def _upload(self, upload_id: str) -> _Upload:
        upload = self._uploads.get(upload_id)
        if upload is None:
            raise UploadNotFound(f"no such upload: {upload_id}")
        return upload

    def _publish(self, hex_digest: str, data: bytes) -> WriteOutcome:
        with self._lock:
            existing = self._blobs.get(hex_digest)
            if existing is not None:
                return WriteOutcome.EXISTED  # first writer wins; the bytes are the same by digest
            self._blobs[hex_digest] = _Blob(data, self._clock())
        return WriteOutcome.CREATED

    @staticmethod
    def _existing(digest: str, blob: _Blob, size_bytes: int) -> WriteOutcome:
        if len(blob.data) != size_bytes:
            raise IntegrityError(
                f"stored blob {digest} has {len(blob.data)} bytes, the writer says {size_bytes}"
            )
        return WriteOutcome.EXISTED


def _read_source(source: BlobSource, size_bytes: int, digest: str) -> bytes:
    """Read exactly ``size_bytes`` from a put source; a shorter or longer source is a mismatch."""
    with open_source(source) as f:
        return b"".join(iter_chunks(f, size_bytes, digest))


def _utc(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)
