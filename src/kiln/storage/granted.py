"""A ``BlobStore`` for one blob, moved through per-object grants by a process without storage credentials.

A runner holds no storage credentials. The control plane opens the upload (or says the blob is
already stored), and hands out short-lived grants: presigned S3 URLs, or HMAC-signed URLs to its own
blob endpoints for the file backend. :class:`GrantedStore` plays the ``BlobStore`` protocol over
those grants, so :func:`kiln.storage.transfer.upload_file` and ``download_file`` run unchanged on
the runner: the same part plan, per-part retries, journal and resume, verified reads.

What goes where:

* data calls (a part, a single put, a GET) go straight to the grant URL with ``httpx``;
* control calls (grants, Complete, Abort) go to a :class:`GrantIssuer`, which the runner implements
  with its control-plane client; the control plane calls CompleteMultipartUpload itself.

Grants expire. Each is kept with the holder's own (monotonic) deadline and renewed shortly before
it runs out; a refused grant (401/403) is dropped and the call fails as transient, so the transfer's
retry asks for a fresh one (the file backend's key changes when its server restarts).
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import httpx

from kiln.errors import (
    AlreadyCommitted,
    BlobNotFound,
    DigestMismatch,
    StorageRefused,
    StorageUnavailable,
    UploadNotFound,
    UsageError,
)
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
from kiln.storage.reader import VerifyingReader
from kiln.storage.sources import iter_chunks, open_source

__all__ = ["Grant", "GrantIssuer", "GrantedStore"]

_READ_CHUNK_BYTES = 1024 * 1024
_CODE_RE = re.compile(r"<Code>([^<]{1,100})</Code>")
_DIGEST_CODES = {"BadDigest", "InvalidDigest", "DigestMismatch", "XAmzContentChecksumMismatch"}
_TRANSIENT_STATUS = {408, 429, 500, 502, 503, 504}
_GRANT_BATCH = 64


@dataclass(frozen=True)
class Grant:
    """One grant: where to send the request, the headers it must carry, and until when it holds.

    ``url`` is absolute (presigned S3) or a path on the control plane (``/v1/grant/...``).
    ``expires_at`` is on the holder's monotonic clock.
    """

    url: str
    headers: Mapping[str, str]
    expires_at: float


class GrantIssuer(Protocol):
    """The control-plane side of one upload session (or one download), as the holder sees it."""

    def part_grants(self, part_numbers: Sequence[int]) -> dict[int, Grant]:
        """Return fresh grants to PUT these parts of the session's multipart upload."""
        ...

    def blob_grant(self, method: GrantMethod) -> Grant:
        """Return a fresh grant to PUT the whole blob (a single-put session) or to GET it."""
        ...

    def complete(self, parts: Sequence[PartEntry] | None, *, existed: bool) -> WriteOutcome:
        """Finish the session: Complete the multipart upload (``parts``), or confirm a single put."""
        ...

    def abort(self) -> None:
        """Abort the session and its multipart upload (idempotent)."""
        ...


class GrantedStore:
    """The one blob ``digest`` of ``size_bytes``, reached through grants.

    Parameters
    ----------
    digest, size_bytes
        The blob. Calls about any other blob are refused.
    issuer
        Hands out grants and finishes the session.
    stored
        The control plane said the blob is already stored (``stat`` then answers its size).
    upload_id, part_size_bytes
        The session's multipart upload, or None for a single put (or a download).
    listed_parts
        The parts the server listed when the session was resumed (what ``list_parts`` answers).
    grants
        Part grants that came with the session, by part number.
    blob_grants
        A whole-blob PUT or GET grant that came with the session or download.
    base_url
        The control plane's URL, for grants that are paths on it.
    clock
        Monotonic seconds, the clock of ``Grant.expires_at``.
    renew_margin_s
        A grant with less than this left is renewed before use.
    """

    def __init__(
        self,
        digest: str,
        size_bytes: int,
        issuer: GrantIssuer,
        *,
        stored: bool = False,
        upload_id: str | None = None,
        part_size_bytes: int | None = None,
        listed_parts: Sequence[PartEntry] = (),
        grants: Mapping[int, Grant] | None = None,
        blob_grants: Mapping[GrantMethod, Grant] | None = None,
        base_url: str = "",
        clock: Callable[[], float] = time.monotonic,
        renew_margin_s: float = 30.0,
        connect_timeout_s: float = 10.0,
    ) -> None:
        self.digest = digest
        self.size_bytes = size_bytes
        self._issuer = issuer
        self._stored = stored
        self._upload_id = upload_id
        self._part_size = part_size_bytes
        self._listed = list(listed_parts)
        self._part_grants: dict[int, Grant] = dict(grants or {})
        self._blob_grants: dict[str, Grant] = dict(blob_grants or {})
        self._base_url = base_url.rstrip("/")
        self._clock = clock
        self._margin = renew_margin_s
        self._lock = threading.Lock()
        self._connect_timeout_s = connect_timeout_s
        self._http = httpx.Client(follow_redirects=False)

    @property
    def capabilities(self) -> Capabilities:
        """The control plane decides; the holder relies on create-only Complete and verified reads."""
        return Capabilities(
            conditional_create=True,
            conditional_complete=True,
            server_verifies_sha256=False,
            verifies_multipart_digest=False,
            lifecycle_backstop=None,
        )

    # -- the blob ----------------------------------------------------------------------------------

    def exists(self, digest: str) -> bool:
        """Whether the control plane said the blob is stored."""
        self._check(digest)
        return self._stored

    def stat(self, digest: str) -> int:
        """The blob's size if the control plane said it is stored; BlobNotFound otherwise."""
        self._check(digest)
        if not self._stored:
            raise BlobNotFound(f"no blob {digest}")
        return self.size_bytes

    def put(
        self, digest: str, source: BlobSource, size_bytes: int, *, timeout_s: float | None = None
    ) -> WriteOutcome:
        """PUT the whole blob to its grant, then have the control plane confirm it is stored."""
        self._check(digest, size_bytes)
        if self._upload_id is not None:
            raise UsageError(f"the control plane opened a multipart upload for {digest}, not a single put")
        grant = self._blob_grant("PUT")
        what = f"PUT {digest}"
        with open_source(source) as f:
            headers = {**grant.headers, "Content-Length": str(size_bytes)}
            response = self._send(
                "PUT",
                grant,
                what,
                content=iter_chunks(f, size_bytes, digest),
                headers=headers,
                timeout_s=timeout_s,
                forget=lambda: self._blob_grants.pop("PUT", None),
            )
        existed = response.status_code == 412  # If-None-Match: * found the blob there
        if not existed:
            _raise_for(response, what)
        return self._issuer.complete(None, existed=existed)

    def open(
        self,
        digest: str,
        *,
        offset: int = 0,
        hasher: Hasher | None = None,
        timeout_s: float | None = None,
    ) -> VerifyingReader:
        """GET the blob from its grant (a Range from ``offset``), wrapped in a verifying reader."""
        self._check(digest)
        grant = self._blob_grant("GET")
        what = f"GET {digest}"
        headers = dict(grant.headers)
        if offset:
            headers["Range"] = f"bytes={offset}-"
        response = self._send(
            "GET",
            grant,
            what,
            headers=headers,
            timeout_s=timeout_s,
            stream=True,
            forget=lambda: self._blob_grants.pop("GET", None),
        )
        try:
            if response.status_code == 416 and offset == self.size_bytes:
                response.close()
                return VerifyingReader(
                    _Empty(), digest=digest, size_bytes=offset, offset=offset, hasher=hasher
                )
            if response.is_error:
                response.read()
                _raise_for(response, what, missing=BlobNotFound)
            stream = _ResponseStream(response, what)
            size = _total_size(response, offset)
            if offset and response.status_code == 200:
                stream.skip(offset)  # the server ignored the Range: drop what we already have
            return VerifyingReader(
                stream, digest=digest, size_bytes=size, offset=offset, hasher=hasher, on_close=response.close
            )
        except BaseException:
            response.close()
            raise

    def delete(self, digest: str) -> None:
        """Refused: a grant holder never deletes."""
        raise _refused("delete")

    def list_blobs(self) -> Iterator[BlobEntry]:
        """Refused: a grant holder sees one blob."""
        raise _refused("list blobs")

    # -- multipart ---------------------------------------------------------------------------------

    def create_upload(self, digest: str, size_bytes: int, part_size_bytes: int) -> str:
        """Return the upload the control plane opened for this session (it already exists)."""
        self._check(digest, size_bytes)
        if self._upload_id is None:
            raise UsageError(f"the control plane chose a single put for {digest}, not a multipart upload")
        if part_size_bytes != self._part_size:
            raise UsageError(
                f"the session for {digest} uses {self._part_size}-byte parts, not {part_size_bytes}"
            )
        self._listed = []  # a fresh start: nothing of an earlier upload counts
        return self._upload_id

    def upload_part(
        self, upload_id: str, part_number: int, data: bytes, *, timeout_s: float | None = None
    ) -> str:
        """PUT one part to its grant with Content-MD5; return the ETag the server answered."""
        self._check_upload(upload_id)
        grant = self._part_grant(part_number)
        md5 = hashlib.md5(data)
        what = f"part {part_number} of {self.digest}"
        headers = {**grant.headers, "Content-MD5": base64.b64encode(md5.digest()).decode("ascii")}
        response = self._send(
            "PUT",
            grant,
            what,
            content=data,
            headers=headers,
            timeout_s=timeout_s,
            forget=lambda: self._forget_part(part_number, grant),
        )
        _raise_for(response, what, missing=UploadNotFound)
        etag = response.headers.get("ETag", "").strip('"').lower()
        return etag or md5.hexdigest()

    def list_parts(self, upload_id: str) -> list[PartEntry]:
        """The parts the control plane listed when it resumed this upload."""
        if upload_id != self._upload_id:
            # Not the session's upload (say, a journal record of an upload that is gone).
            raise UploadNotFound(f"no such upload: {upload_id}")
        return list(self._listed)

    def complete_upload(self, upload_id: str, parts: Sequence[PartEntry]) -> WriteOutcome:
        """Ask the control plane to Complete the upload (it verifies what it can)."""
        self._check_upload(upload_id)
        return self._issuer.complete(list(parts), existed=False)

    def abort_upload(self, upload_id: str) -> None:
        """Ask the control plane to abort the session's upload; another id is not ours to abort."""
        if upload_id == self._upload_id:
            self._issuer.abort()

    def list_uploads(self) -> Iterator[UploadEntry]:
        """Refused: a grant holder sees one upload."""
        raise _refused("list uploads")

    # -- grants ------------------------------------------------------------------------------------

    def grant_url(self, digest: str, method: GrantMethod, expires_s: int) -> str:
        """Refused: only the control plane grants."""
        raise _refused("grant")

    def grant_headers(self, digest: str, method: GrantMethod) -> Mapping[str, str]:
        """Refused: only the control plane grants."""
        raise _refused("grant")

    def grant_part_url(self, upload_id: str, part_number: int, expires_s: int) -> str:
        """Refused: only the control plane grants."""
        raise _refused("grant")

    def close(self) -> None:
        """Close the HTTP connections."""
        self._http.close()

    def __enter__(self) -> GrantedStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- internals ---------------------------------------------------------------------------------

    def _check(self, digest: str, size_bytes: int | None = None) -> None:
        if digest != self.digest:
            raise UsageError(f"this grant holder moves {self.digest} only, not {digest}")
        if size_bytes is not None and size_bytes != self.size_bytes:
            raise UsageError(f"{digest} is {self.size_bytes} bytes here, not {size_bytes}")

    def _check_upload(self, upload_id: str) -> None:
        if self._upload_id is None or upload_id != self._upload_id:
            raise UploadNotFound(f"no such upload in this session: {upload_id}")

    def _fresh(self, grant: Grant | None) -> bool:
        return grant is not None and grant.expires_at - self._clock() > self._margin

    def _blob_grant(self, method: GrantMethod) -> Grant:
        with self._lock:
            grant = self._blob_grants.get(method)
            if grant is None or not self._fresh(grant):
                grant = self._blob_grants[method] = self._issuer.blob_grant(method)
            return grant

    def _part_grant(self, part_number: int) -> Grant:
        with self._lock:
            grant = self._part_grants.get(part_number)
            if grant is not None and self._fresh(grant):
                return grant
            # Ask for this part and the next few at once: parts are sent roughly in order.
            last = self._parts_total()
            wanted = [
                n
                for n in range(part_number, min(last, part_number + _GRANT_BATCH - 1) + 1)
                if n == part_number or not self._fresh(self._part_grants.get(n))
            ]
            self._part_grants.update(self._issuer.part_grants(wanted))
            grant = self._part_grants.get(part_number)
            if grant is None:
                raise StorageRefused(
                    f"the control plane gave no grant for part {part_number} of {self.digest}"
                )
            return grant

    def _forget_part(self, part_number: int, grant: Grant) -> None:
        with self._lock:
            if self._part_grants.get(part_number) is grant:
                del self._part_grants[part_number]

    def _parts_total(self) -> int:
        if not self._part_size:
            return 1
        return max(1, math.ceil(self.size_bytes / self._part_size))

    def _send(
        self,
        method: str,
        grant: Grant,
        what: str,
        *,
        forget: Callable[[], object],
        content: bytes | Iterator[bytes] | None = None,
        headers: Mapping[str, str] | None = None,
        timeout_s: float | None = None,
        stream: bool = False,
    ) -> httpx.Response:
        url = grant.url if "://" in grant.url else self._base_url + grant.url
        timeout = httpx.Timeout(timeout_s or 60.0, connect=self._connect_timeout_s)
        try:
            request = self._http.build_request(method, url, content=content, headers=headers, timeout=timeout)
            response = self._http.send(request, stream=stream)
        except httpx.HTTPError as exc:
            raise StorageUnavailable(f"{what}: {type(exc).__name__}: {exc}") from exc
        if response.status_code in (401, 403):
            forget()
            if stream:
                response.read()
            code = _error_code(response)
            # Transient on purpose: the retry comes back with a fresh grant.
            raise StorageUnavailable(f"{what}: the grant was refused (HTTP {response.status_code} {code})")
        return response


def _raise_for(
    response: httpx.Response, what: str, *, missing: type[BlobNotFound | UploadNotFound] = BlobNotFound
) -> None:
    """Raise the kiln error an unsuccessful grant response stands for."""
    status = response.status_code
    if status < 400:
        return
    code = _error_code(response)
    detail = f"{what}: HTTP {status} {code}".rstrip()
    if status == 404:
        if code in ("NoSuchUpload", "UploadNotFound"):
            raise UploadNotFound(detail)
        raise missing(detail)
    if code in _DIGEST_CODES:
        raise DigestMismatch(detail)
    if status == 412:
        raise AlreadyCommitted(detail)
    if status in _TRANSIENT_STATUS or code in ("SlowDown", "RequestTimeout", "ConditionalRequestConflict"):
        raise StorageUnavailable(detail)
    raise StorageRefused(detail)


def _error_code(response: httpx.Response) -> str:
    """The error's name: S3's ``<Code>`` or the control plane's JSON ``error``."""
    try:
        text = response.text[:4000]
    except (httpx.HTTPError, UnicodeDecodeError):
        return ""
    if response.headers.get("content-type", "").startswith("application/json"):
        try:
            name = response.json().get("error", "")
        except ValueError:
            return ""
        return str(name)
    match = _CODE_RE.search(text)
    return match.group(1) if match else ""


def _total_size(response: httpx.Response, offset: int) -> int:
    content_range = response.headers.get("Content-Range")
    if content_range and "/" in content_range:
        return int(content_range.rsplit("/", 1)[1])
    length = int(response.headers.get("Content-Length", "-1"))
    if length < 0:
        raise StorageRefused(f"the blob server sent no length for {response.request.url.path}")
    return length + (offset if response.status_code == 206 else 0)


def _refused(what: str) -> UsageError:
    return UsageError(f"a grant holder cannot {what}: only the control plane can")


class _ResponseStream:
    """``read(n)`` over a streamed httpx response; network errors become StorageUnavailable."""

    def __init__(self, response: httpx.Response, what: str) -> None:
        self._chunks = response.iter_raw(_READ_CHUNK_BYTES)
        self._buffer = bytearray()
        self._what = what

    def read(self, n: int = -1) -> bytes:
        while n < 0 or len(self._buffer) < n:
            try:
                chunk = next(self._chunks)
            except StopIteration:
                break
            except httpx.HTTPError as exc:
                raise StorageUnavailable(f"{self._what}: {type(exc).__name__}: {exc}") from exc
            if not self._buffer and 0 < len(chunk) <= n:
                return chunk  # the common case: hand the network's chunk over without a copy
            self._buffer += chunk
        take = len(self._buffer) if n < 0 else min(n, len(self._buffer))
        data = bytes(self._buffer[:take])
        del self._buffer[:take]
        return data

    def skip(self, count: int) -> None:
        while count > 0:
            chunk = self.read(min(count, _READ_CHUNK_BYTES))
            if not chunk:
                return
            count -= len(chunk)


class _Empty:
    def read(self, n: int = -1) -> bytes:
        return b""
