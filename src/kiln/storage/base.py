"""The `BlobStore` Protocol every storage backend implements, and the plain values it trades in.

A blob store is content-addressed: a blob lives at ``<prefix>/blobs/sha256/<hex>`` and is never
modified once written. Every write is verified against the digest before the blob becomes
visible at its address (or, for S3 multipart, before Complete is sent; see ``docs/design-storage.md``),
and every read verifies the digest while streaming. Visibility to users is decided later by the
metadata commit, never by the store: the store only holds bytes.

The interface is deliberately primitive (digest strings, byte strings, paths, ints) so that
backends never import the domain. The shared contract suite in ``tests/contract/storage/`` runs
against every implementation.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import BinaryIO, Literal, NamedTuple, Protocol, runtime_checkable

__all__ = [
    "MAX_PARTS",
    "MAX_PART_SIZE_BYTES",
    "MIN_PART_SIZE_BYTES",
    "BlobEntry",
    "BlobReader",
    "BlobSource",
    "BlobStore",
    "Capabilities",
    "GrantMethod",
    "Hasher",
    "PartEntry",
    "UploadEntry",
    "WriteOutcome",
]

# S3's multipart limits. Every backend enforces them, so that a test passing on the file backend
# means the same call sequence works against S3.
MIN_PART_SIZE_BYTES = 5 * 1024 * 1024
MAX_PART_SIZE_BYTES = 5 * 1024 * 1024 * 1024
MAX_PARTS = 10_000

GrantMethod = Literal["GET", "PUT"]

#: What ``put`` accepts: the bytes themselves, a readable binary file object, or a path.
BlobSource = bytes | BinaryIO | str | os.PathLike[str]


class WriteOutcome(enum.StrEnum):
    """What a create-only write did."""

    CREATED = "created"  # this call published the blob
    EXISTED = "existed"  # the blob was already there (or another writer won the race): nothing written


class BlobEntry(NamedTuple):
    """One stored blob, as listed for garbage collection."""

    digest: str
    size_bytes: int
    modified_at: datetime  # timezone-aware UTC


class PartEntry(NamedTuple):
    """One uploaded part of a multipart upload. ``etag`` is the hex MD5 of the part's bytes."""

    part_number: int
    size_bytes: int
    etag: str


class UploadEntry(NamedTuple):
    """One multipart upload that was started and neither completed nor aborted."""

    upload_id: str
    digest: str
    initiated_at: datetime  # timezone-aware UTC


@dataclass(frozen=True)
class Capabilities:
    """What a backend guarantees; the S3 backend learns this from a probe at open time."""

    conditional_create: bool  # a create-only PutObject is refused by the server if the key exists
    conditional_complete: bool  # same for CompleteMultipartUpload
    server_verifies_sha256: bool  # the server checks a single put's sha256 before storing it
    verifies_multipart_digest: bool  # complete_upload itself checks the assembled blob's sha256
    lifecycle_backstop: bool | None  # an abort-incomplete-uploads rule is installed (None: n/a)


class Hasher(Protocol):
    """The part of ``hashlib``'s hash objects that a verifying reader uses."""

    def update(self, data: bytes, /) -> None: ...

    def hexdigest(self) -> str: ...


class BlobReader(Protocol):
    """A streaming reader that verifies the blob's sha256 once its last byte is read.

    ``read`` raises :class:`~kiln.errors.DigestMismatch` *before* returning the final chunk if
    the bytes do not hash to the digest, so a consumer that stops at ``size`` bytes is covered too.
    """

    size_bytes: int

    def read(self, n: int = -1, /) -> bytes: ...

    def close(self) -> None: ...

    def __enter__(self) -> BlobReader: ...

    def __exit__(self, *exc_info: object) -> None: ...


@runtime_checkable
class BlobStore(Protocol):
    """A content-addressed, create-only blob store.

    Digests are ``"sha256:<64 lowercase hex>"``. Upload ids are opaque strings that start with
    the blob's hex digest, so any process can tell which blob an upload is for.
    """

    @property
    def capabilities(self) -> Capabilities:
        """What this backend guarantees (see :class:`Capabilities`)."""
        ...

    def exists(self, digest: str) -> bool:
        """Return whether the blob is stored."""
        ...

    def stat(self, digest: str) -> int:
        """Return the stored blob's size in bytes; raise BlobNotFound if it is not stored."""
        ...

    def put(
        self, digest: str, source: BlobSource, size_bytes: int, *, timeout_s: float | None = None
    ) -> WriteOutcome:
        """Store ``size_bytes`` bytes from ``source`` at ``digest``, create-only.

        If the blob already exists with this size nothing is read or sent (``EXISTED``). The bytes
        are verified against the digest before the blob becomes visible; on a mismatch nothing is
        published and DigestMismatch is raised. ``timeout_s`` is the stall timeout for network
        backends (a request making no progress for that long fails).
        """
        ...

    def open(
        self,
        digest: str,
        *,
        offset: int = 0,
        hasher: Hasher | None = None,
        timeout_s: float | None = None,
    ) -> BlobReader:
        """Open the blob for streaming, verifying the sha256 at the end.

        To resume a read at ``offset`` > 0, pass ``hasher`` already fed with bytes ``[0, offset)``;
        the reader continues it, so the whole blob is still verified.
        """
        ...

    def delete(self, digest: str) -> None:
        """Delete the blob. Deleting a blob that is not stored is not an error."""
        ...

    def list_blobs(self) -> Iterator[BlobEntry]:
        """Yield every stored blob (for garbage collection)."""
        ...

    def create_upload(self, digest: str, size_bytes: int, part_size_bytes: int) -> str:
        """Start a multipart upload of the blob and return its upload id."""
        ...

    def upload_part(
        self, upload_id: str, part_number: int, data: bytes, *, timeout_s: float | None = None
    ) -> str:
        """Upload (or replace) one part, 1-based, and return its ETag (hex MD5 of ``data``)."""
        ...

    def list_parts(self, upload_id: str) -> list[PartEntry]:
        """Return the parts uploaded so far, ascending; raise UploadNotFound if the upload is gone.

        A re-uploaded part number is listed once, with its latest ETag, on S3 proper and the
        file and memory backends; SeaweedFS 4.48 lists every version. Callers match on ETag.
        """
        ...

    def complete_upload(self, upload_id: str, parts: Sequence[PartEntry]) -> WriteOutcome:
        """Assemble ``parts`` (ascending, every part but the last at least 5 MiB) into the blob.

        Create-only: if the blob already exists the upload is aborted and ``EXISTED`` returned.
        If the upload is gone but the blob exists with the parts' total size (a Complete whose
        response was lost), also ``EXISTED``; otherwise UploadNotFound.
        """
        ...

    def abort_upload(self, upload_id: str) -> None:
        """Abort the upload and drop its parts. Aborting an unknown upload is not an error."""
        ...

    def list_uploads(self) -> Iterator[UploadEntry]:
        """Yield every upload that was started and neither completed nor aborted."""
        ...

    def grant_url(self, digest: str, method: GrantMethod, expires_s: int) -> str:
        """Return a URL that lets its holder GET or PUT exactly this blob for ``expires_s`` seconds."""
        ...

    def grant_headers(self, digest: str, method: GrantMethod) -> Mapping[str, str]:
        """Return the headers the holder of a grant URL must send with its request."""
        ...

    def grant_part_url(self, upload_id: str, part_number: int, expires_s: int) -> str:
        """Return a URL that lets its holder PUT exactly this part of this upload for ``expires_s`` seconds.

        The holder sends the part's ``Content-MD5``; the answer carries the part's ETag.
        """
        ...

    def close(self) -> None:
        """Release connections and other resources."""
        ...
