"""``s3://bucket/prefix?endpoint=…&region=…``: blobs in any S3-compatible object store.

Blobs live at ``<prefix>/blobs/sha256/<hex>``. Credentials come from boto3's usual chain
(environment, ``~/.aws``, instance roles) unless passed as options.

Which layer retries what (so that nothing retries twice):

* botocore retries the *control* calls (HEAD, Create/Complete/Abort/List, DELETE, probes) in its
  ``standard`` mode: connection errors, 5xx and throttling, ``http_attempts`` tries in all.
  Every one of them is idempotent or has its repeat handled below (a repeated Complete).
* The *data* calls (PutObject, UploadPart, GetObject) go through a second client with botocore
  retries off. ``kiln.storage.transfer`` retries them per part with its own backoff, re-reading
  the part from disk, and resumes a GET by byte range. Their socket read timeout is the stall
  timeout (``timeout_s``): a request that makes no progress for that long fails.

Create-only writes send ``If-None-Match: *`` when the capability probe (``s3_probe``) found the
server honours it. When it does not, content addressing keeps same-key writes harmless: the same
digest means the same bytes, so a lost race rewrites identical bytes, and what becomes visible is
decided later by the metadata commit, never by the object store.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, BinaryIO
from urllib.parse import parse_qs, urlsplit

import boto3
import urllib3.exceptions
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from kiln.errors import (
    AlreadyCommitted,
    BlobNotFound,
    DigestMismatch,
    IntegrityError,
    KilnError,
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
from kiln.storage.digests import BLOB_DIR, digest_from_hex, digest_to_b64, digest_to_hex
from kiln.storage.multipart import (
    check_completion,
    check_part_number,
    check_part_plan,
    make_upload_id,
    split_upload_id,
)
from kiln.storage.reader import VerifyingReader
from kiln.storage.s3_errors import error_code, translate
from kiln.storage.s3_probe import probe_capabilities
from kiln.storage.sources import CHUNK_BYTES, iter_chunks, open_source

__all__ = ["S3BlobStore"]

logger = logging.getLogger(__name__)

_MAX_PUT_BYTES = 5 * 1024**3
_NETWORK_ERRORS = (ClientError, BotoCoreError, OSError, urllib3.exceptions.HTTPError)
_URL_OPTIONS = {
    "endpoint": "endpoint_url",
    "region": "region",
    "profile": "profile",
    "addressing": "addressing_style",
    "probe": "probe",
    "lifecycle_days": "lifecycle_days",
}
_CONSERVATIVE = Capabilities(
    conditional_create=False,
    conditional_complete=False,
    server_verifies_sha256=False,
    verifies_multipart_digest=False,
    lifecycle_backstop=None,
)


class S3BlobStore:
    """A blob store in an S3 bucket, below an optional key prefix.

    Parameters
    ----------
    bucket, prefix
        Where the blobs live (``<prefix>/blobs/sha256/<hex>``).
    endpoint_url, region, profile
        The server (None: AWS), its region (default us-east-1) and an AWS config profile.
    aws_access_key_id, aws_secret_access_key, aws_session_token
        Explicit credentials; None uses boto3's default chain.
    addressing_style
        ``"path"`` (default; what most non-AWS servers need) or ``"virtual"``.
    probe
        Probe the server's capabilities at open time (see ``s3_probe``). False assumes none.
    lifecycle_days
        Install the abort-incomplete-uploads lifecycle backstop with this many days (None: don't).
    http_attempts
        botocore's total attempts for control calls.
    connect_timeout_s, read_timeout_s
        Socket timeouts; ``read_timeout_s`` is the default stall timeout for data calls.
    max_pool_connections
        HTTP connections per client; keep it above the transfer concurrency.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        profile: str | None = None,
        aws_access_key_id: str | None = None,
        aws_secret_access_key: str | None = None,
        aws_session_token: str | None = None,
        addressing_style: str = "path",
        probe: bool = True,
        lifecycle_days: int | None = 1,
        http_attempts: int = 5,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 60.0,
        max_pool_connections: int = 16,
    ) -> None:
        if not bucket:
            raise UsageError("an S3 store needs a bucket")
        if addressing_style not in ("path", "virtual", "auto"):
            raise UsageError(f"addressing must be path, virtual or auto, not {addressing_style!r}")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self._blob_prefix = f"{self.prefix}/{BLOB_DIR}/" if self.prefix else f"{BLOB_DIR}/"
        self._endpoint_url = endpoint_url
        self._addressing_style = addressing_style
        self._connect_timeout_s = connect_timeout_s
        self._read_timeout_s = read_timeout_s
        self._max_pool_connections = max_pool_connections
        # boto3 sessions are not thread-safe; clients are. Build every client here or under the lock.
        self._session = boto3.session.Session(
            aws_access_key_id=aws_access_key_id,
            aws_secret_access_key=aws_secret_access_key,
            aws_session_token=aws_session_token,
            profile_name=profile,
        )
        self._region = region or self._session.region_name or "us-east-1"
        self._control = self._make_client(attempts=http_attempts, read_timeout_s=read_timeout_s)
        self._data_clients: dict[float, Any] = {}
        self._data_lock = threading.Lock()
        self._capabilities = (
            probe_capabilities(
                self._control,
                bucket,
                self.prefix,
                endpoint=endpoint_url or "aws",
                lifecycle_days=lifecycle_days,
            )
            if probe
            else _CONSERVATIVE
        )

    @classmethod
    def from_url(cls, url: str, **options: Any) -> S3BlobStore:
        """Open ``s3://bucket/prefix?endpoint=URL&region=R&profile=P&addressing=path&probe=1&lifecycle_days=1``.

        Options passed as keywords win over the URL's query; ``lifecycle_days=0`` skips the rule.
        """
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc:
            raise UsageError(f"an S3 store URL is s3://bucket[/prefix][?options], not {url!r}")
        for key, values in parse_qs(parts.query, keep_blank_values=True).items():
            if key not in _URL_OPTIONS:
                raise UsageError(f"unknown option {key!r} in {url!r} (known: {', '.join(_URL_OPTIONS)})")
            name, value = _URL_OPTIONS[key], values[-1]
            if name == "probe":
                options.setdefault(name, value not in ("0", "false", "no"))
            elif name == "lifecycle_days":
                options.setdefault(name, int(value) or None)
            else:
                options.setdefault(name, value)
        return cls(parts.netloc, parts.path, **options)

    @property
    def capabilities(self) -> Capabilities:
        """What the probe found (conservative if probing was turned off)."""
        return self._capabilities

    # -- blobs -----------------------------------------------------------------------------------

    def exists(self, digest: str) -> bool:
        """Return whether the blob is stored (HEAD)."""
        return self._head_size(self._key(digest)) is not None

    def stat(self, digest: str) -> int:
        """Return the blob's size (HEAD); raise BlobNotFound."""
        size = self._head_size(self._key(digest))
        if size is None:
            raise BlobNotFound(f"no blob {digest}")
        return size

    def put(
        self, digest: str, source: BlobSource, size_bytes: int, *, timeout_s: float | None = None
    ) -> WriteOutcome:
        """PutObject create-only, with the bytes checked before the object exists.

        If the server verifies ``x-amz-checksum-sha256`` (probed), the bytes stream once and the
        server refuses a mismatch. Otherwise kiln hashes the source first (spooling a stream it
        cannot rewind) and sends Content-MD5, so the server still rejects bytes damaged in transit.
        """
        key = self._key(digest)
        if size_bytes > _MAX_PUT_BYTES:
            raise UsageError(f"S3 takes at most 5 GiB in one PutObject; upload {size_bytes} bytes in parts")
        if (existing := self._head_size(key)) is not None:
            return _existed(digest, existing, size_bytes)
        params: dict[str, Any] = {"Bucket": self.bucket, "Key": key, "ContentLength": size_bytes}
        if self._capabilities.conditional_create:
            params["IfNoneMatch"] = "*"
        with open_source(source) as src:
            if self._capabilities.server_verifies_sha256:
                body = _ExactBody(src, size_bytes, digest)
                params["ChecksumSHA256"] = digest_to_b64(digest)
                return self._put_object(params, body, digest, size_bytes, timeout_s)
            with _prehashed(src, size_bytes, digest) as (rewound, md5_b64):
                params["ContentMD5"] = md5_b64
                return self._put_object(
                    params, _ExactBody(rewound, size_bytes, digest), digest, size_bytes, timeout_s
                )

    def open(
        self,
        digest: str,
        *,
        offset: int = 0,
        hasher: Hasher | None = None,
        timeout_s: float | None = None,
    ) -> VerifyingReader:
        """GetObject (a Range from ``offset``) wrapped in a verifying reader."""
        key = self._key(digest)
        params: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if offset:
            params["Range"] = f"bytes={offset}-"
        try:
            response = self._data(timeout_s).get_object(**params)
        except ClientError as exc:
            if error_code(exc)[1] == 416:  # resuming at the very end: nothing left to fetch
                size = self.stat(digest)
                if offset == size:
                    return VerifyingReader(
                        _Empty(), digest=digest, size_bytes=size, offset=offset, hasher=hasher
                    )
            raise translate(exc, f"GET {key}") from exc
        except _NETWORK_ERRORS as exc:
            raise translate(exc, f"GET {key}") from exc
        body = response["Body"]
        size = offset + int(response["ContentLength"])
        if offset and (content_range := response.get("ContentRange")):
            size = int(content_range.rsplit("/", 1)[1])
        return VerifyingReader(
            _BodyStream(body, f"GET {key}"),
            digest=digest,
            size_bytes=size,
            offset=offset,
            hasher=hasher,
            on_close=body.close,
        )

    def delete(self, digest: str) -> None:
        """DeleteObject (S3 deletes are idempotent)."""
        key = self._key(digest)
        self._call(f"DELETE {key}", self._control.delete_object, Bucket=self.bucket, Key=key)

    def list_blobs(self) -> Iterator[BlobEntry]:
        """ListObjectsV2 below ``<prefix>/blobs/sha256/``, paginated."""
        paginator = self._control.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self._blob_prefix):
                for item in page.get("Contents", []):
                    hex_digest = item["Key"][len(self._blob_prefix) :]
                    if _is_hex(hex_digest):
                        yield BlobEntry(
                            digest_from_hex(hex_digest), int(item["Size"]), _utc(item["LastModified"])
                        )
        except _NETWORK_ERRORS as exc:
            raise translate(exc, f"LIST {self._blob_prefix}") from exc

    # -- multipart -------------------------------------------------------------------------------

    def create_upload(self, digest: str, size_bytes: int, part_size_bytes: int) -> str:
        """CreateMultipartUpload; the upload id is ``<hex>.<S3 UploadId>``."""
        check_part_plan(size_bytes, part_size_bytes)
        key = self._key(digest)
        response = self._call(
            f"CreateMultipartUpload {key}",
            self._control.create_multipart_upload,
            Bucket=self.bucket,
            Key=key,
            Metadata={"kiln-size-bytes": str(size_bytes)},
        )
        return make_upload_id(digest_to_hex(digest), response["UploadId"])

    def upload_part(
        self, upload_id: str, part_number: int, data: bytes, *, timeout_s: float | None = None
    ) -> str:
        """UploadPart with Content-MD5, so the server refuses a part damaged on the way."""
        check_part_number(part_number)
        hex_digest, raw_id = split_upload_id(upload_id)
        key = self._key_for_hex(hex_digest)
        md5 = hashlib.md5(data)
        response = self._call(
            f"UploadPart {part_number} of {key}",
            self._data(timeout_s).upload_part,
            Bucket=self.bucket,
            Key=key,
            UploadId=raw_id,
            PartNumber=part_number,
            Body=data,
            ContentMD5=base64.b64encode(md5.digest()).decode("ascii"),
        )
        return _etag(response["ETag"])

    def list_parts(self, upload_id: str) -> list[PartEntry]:
        """ListParts, paginated (1,000 per page)."""
        hex_digest, raw_id = split_upload_id(upload_id)
        key = self._key_for_hex(hex_digest)
        parts: list[PartEntry] = []
        marker = 0
        while True:
            response = self._call(
                f"ListParts {key}",
                self._control.list_parts,
                Bucket=self.bucket,
                Key=key,
                UploadId=raw_id,
                MaxParts=1000,
                PartNumberMarker=marker,
            )
            for part in response.get("Parts", []):
                parts.append(PartEntry(int(part["PartNumber"]), int(part["Size"]), _etag(part["ETag"])))
            if not response.get("IsTruncated"):
                return sorted(parts)
            marker = int(response["NextPartNumberMarker"])

    def complete_upload(self, upload_id: str, parts: Sequence[PartEntry]) -> WriteOutcome:
        """CompleteMultipartUpload, create-only where the server supports it.

        * 412 Precondition Failed: the blob already exists; our upload is aborted (``EXISTED``).
        * NoSuchUpload: an earlier Complete may have succeeded with its answer lost (or botocore's
          own retry of this call got it): HEAD the blob; the right size means ``EXISTED``.
        """
        total = check_completion(parts)
        hex_digest, raw_id = split_upload_id(upload_id)
        key = self._key_for_hex(hex_digest)
        digest = digest_from_hex(hex_digest)
        params: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": key,
            "UploadId": raw_id,
            "MultipartUpload": {
                "Parts": [{"PartNumber": p.part_number, "ETag": f'"{p.etag}"'} for p in parts]
            },
        }
        if self._capabilities.conditional_complete:
            params["IfNoneMatch"] = "*"
        elif (existing := self._head_size(key)) is not None:
            # No server-side condition: check first. A race past this check rewrites identical bytes.
            self.abort_upload(upload_id)
            return _existed(digest, existing, total)
        try:
            self._call(f"CompleteMultipartUpload {key}", self._control.complete_multipart_upload, **params)
        except AlreadyCommitted:
            self.abort_upload(upload_id)
            return _existed(digest, self._head_size(key), total)
        except UploadNotFound:
            if self._head_size(key) == total:
                return WriteOutcome.EXISTED
            raise
        return WriteOutcome.CREATED

    def abort_upload(self, upload_id: str) -> None:
        """AbortMultipartUpload; an unknown or finished upload is not an error."""
        try:
            hex_digest, raw_id = split_upload_id(upload_id)
        except UploadNotFound:
            return
        key = self._key_for_hex(hex_digest)
        with contextlib.suppress(UploadNotFound):
            self._call(
                f"AbortMultipartUpload {key}",
                self._control.abort_multipart_upload,
                Bucket=self.bucket,
                Key=key,
                UploadId=raw_id,
            )

    def list_uploads(self) -> Iterator[UploadEntry]:
        """ListMultipartUploads below ``<prefix>/blobs/sha256/``, paginated."""
        params: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self._blob_prefix, "MaxUploads": 1000}
        while True:
            response = self._call(
                f"ListMultipartUploads {self._blob_prefix}", self._control.list_multipart_uploads, **params
            )
            for upload in response.get("Uploads", []):
                hex_digest = upload["Key"][len(self._blob_prefix) :]
                if _is_hex(hex_digest):
                    yield UploadEntry(
                        make_upload_id(hex_digest, upload["UploadId"]),
                        digest_from_hex(hex_digest),
                        _utc(upload["Initiated"]),
                    )
            if not response.get("IsTruncated"):
                return
            params["KeyMarker"] = response.get("NextKeyMarker", "")
            params["UploadIdMarker"] = response.get("NextUploadIdMarker", "")

    # -- grants ----------------------------------------------------------------------------------

    def grant_url(self, digest: str, method: GrantMethod, expires_s: int) -> str:
        """A SigV4 presigned URL for exactly this object.

        A PUT grant also signs the sha256 checksum and ``If-None-Match: *`` where the server
        enforces them, so its holder can only create this blob, with exactly these bytes.
        """
        key = self._key(digest)
        params: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if method == "GET":
            client_method = "get_object"
        elif method == "PUT":
            client_method = "put_object"
            if self._capabilities.server_verifies_sha256:
                params["ChecksumSHA256"] = digest_to_b64(digest)
            if self._capabilities.conditional_create:
                params["IfNoneMatch"] = "*"
        else:
            raise UsageError(f"grant method must be GET or PUT, not {method!r}")
        url: str = self._control.generate_presigned_url(
            client_method, Params=params, ExpiresIn=int(expires_s)
        )
        return url

    def grant_part_url(self, upload_id: str, part_number: int, expires_s: int) -> str:
        """A SigV4 presigned UploadPart URL for exactly this part of this upload.

        The holder sends ``Content-MD5`` (unsigned, so the URL can be made before the part is
        read); the server still refuses a part whose bytes do not match it.
        """
        check_part_number(part_number)
        hex_digest, raw_id = split_upload_id(upload_id)
        params = {
            "Bucket": self.bucket,
            "Key": self._key_for_hex(hex_digest),
            "UploadId": raw_id,
            "PartNumber": part_number,
        }
        url: str = self._control.generate_presigned_url(
            "upload_part", Params=params, ExpiresIn=int(expires_s)
        )
        return url

    def grant_headers(self, digest: str, method: GrantMethod) -> Mapping[str, str]:
        """The signed headers a PUT grant's holder must send (none for GET)."""
        headers: dict[str, str] = {}
        if method == "PUT":
            if self._capabilities.server_verifies_sha256:
                headers["x-amz-checksum-sha256"] = digest_to_b64(digest)
            if self._capabilities.conditional_create:
                headers["If-None-Match"] = "*"
        else:
            digest_to_hex(digest)
        return headers

    def close(self) -> None:
        """Close every client's connection pool."""
        with self._data_lock:
            clients = [self._control, *self._data_clients.values()]
            self._data_clients.clear()
        for client in clients:
            client.close()

    # -- internals -------------------------------------------------------------------------------

    def _key(self, digest: str) -> str:
        return self._key_for_hex(digest_to_hex(digest))

    def _key_for_hex(self, hex_digest: str) -> str:
        return self._blob_prefix + hex_digest

    def _make_client(self, *, attempts: int, read_timeout_s: float, sign_payload: bool = True) -> Any:
        config = Config(
            signature_version="s3v4",
            # Data calls always carry Content-MD5 or x-amz-checksum-sha256, which are signed
            # headers; signing the payload too would make botocore hash every part once more.
            s3={"addressing_style": self._addressing_style, "payload_signing_enabled": sign_payload},
            retries={"mode": "standard", "total_max_attempts": attempts},
            connect_timeout=self._connect_timeout_s,
            read_timeout=read_timeout_s,
            max_pool_connections=self._max_pool_connections,
            # botocore >= 1.36 adds CRC checksums by default, which many non-AWS servers reject.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        return self._session.client(
            "s3", endpoint_url=self._endpoint_url, region_name=self._region, config=config
        )

    def _data(self, timeout_s: float | None) -> Any:
        """The no-retry client for data calls, one per stall timeout (botocore fixes it per client)."""
        timeout = float(timeout_s if timeout_s is not None else self._read_timeout_s)
        with self._data_lock:
            client = self._data_clients.get(timeout)
            if client is None:
                client = self._data_clients[timeout] = self._make_client(
                    attempts=1, read_timeout_s=timeout, sign_payload=False
                )
            return client

    def _call(self, what: str, method: Any, **params: Any) -> Any:
        try:
            return method(**params)
        except _NETWORK_ERRORS as exc:
            raise translate(exc, what) from exc

    def _head_size(self, key: str) -> int | None:
        try:
            response = self._call(f"HEAD {key}", self._control.head_object, Bucket=self.bucket, Key=key)
        except BlobNotFound:
            return None
        return int(response["ContentLength"])

    def _put_object(
        self, params: dict[str, Any], body: _ExactBody, digest: str, size_bytes: int, timeout_s: float | None
    ) -> WriteOutcome:
        try:
            self._call(f"PutObject {params['Key']}", self._data(timeout_s).put_object, Body=body, **params)
        except AlreadyCommitted:
            return _existed(digest, self._head_size(params["Key"]), size_bytes)
        except KilnError:
            # A source that ran short or long surfaces as a broken connection: report the cause.
            if body.error is not None:
                raise body.error from None
            raise
        if body.error is not None:
            raise body.error
        return WriteOutcome.CREATED


class _ExactBody:
    """A request body that yields exactly ``size_bytes`` from the source, or records why not.

    botocore and urllib3 read it in small blocks; reading the source directly (no buffering here)
    keeps a large upload from copying its bytes around more than once.
    """

    def __init__(self, source: BinaryIO, size_bytes: int, digest: str) -> None:
        self._source = source
        self._remaining = size_bytes
        self._size = size_bytes
        self._digest = digest
        self.error: DigestMismatch | None = None

    def read(self, n: int = -1) -> bytes:
        if self._remaining == 0:
            return b""
        want = self._remaining if n is None or n < 0 else min(n, self._remaining)
        chunk = self._source.read(want)
        if not chunk or len(chunk) > want:
            self._fail(f"the source for {self._digest} is not {self._size} bytes long")
        self._remaining -= len(chunk)
        # Check for surplus bytes *before* handing over the last chunk: failing now breaks the
        # request before its body is complete, so the server stores nothing.
        if self._remaining == 0 and self._source.read(1):
            self._fail(f"the source for {self._digest} is longer than {self._size} bytes")
        return chunk

    def _fail(self, message: str) -> None:
        self.error = DigestMismatch(message)
        raise self.error


class _BodyStream:
    """A GetObject body whose network errors become StorageUnavailable (retried by transfer)."""

    def __init__(self, body: Any, what: str) -> None:
        self._body = body
        self._what = what

    def read(self, n: int = -1) -> bytes:
        try:
            data: bytes = self._body.read(n if n >= 0 else None)
        except _NETWORK_ERRORS as exc:
            raise translate(exc, self._what) from exc
        return data


class _Empty:
    def read(self, n: int = -1) -> bytes:
        return b""


class _prehashed:
    """Hash a put source before sending it; yield it rewound, with its Content-MD5.

    Used when the server cannot check sha256 itself: nothing is sent unless the bytes match.
    A source that cannot seek is spooled to a temporary file first.
    """

    def __init__(self, source: BinaryIO, size_bytes: int, digest: str) -> None:
        self._source = source
        self._size = size_bytes
        self._digest = digest
        self._spool: Any = None

    def __enter__(self) -> tuple[BinaryIO, str]:
        source = self._source
        start = 0
        try:
            start = source.tell()
            seekable = source.seekable()
        except (AttributeError, OSError):
            seekable = False
        sha256, md5 = hashlib.sha256(), hashlib.md5()
        if not seekable:
            self._spool = tempfile.TemporaryFile()
        for chunk in iter_chunks(source, self._size, self._digest, CHUNK_BYTES):
            sha256.update(chunk)
            md5.update(chunk)
            if self._spool is not None:
                self._spool.write(chunk)
        if "sha256:" + sha256.hexdigest() != self._digest:
            raise DigestMismatch(f"the bytes written for {self._digest} hash to sha256:{sha256.hexdigest()}")
        if self._spool is not None:
            self._spool.seek(0)
            rewound: BinaryIO = self._spool
        else:
            source.seek(start)
            rewound = source
        return rewound, base64.b64encode(md5.digest()).decode("ascii")

    def __exit__(self, *exc_info: object) -> None:
        if self._spool is not None:
            self._spool.close()


def _existed(digest: str, stored_size: int | None, size_bytes: int) -> WriteOutcome:
    if stored_size is None:
        # 412 said the key exists, then HEAD said it does not: it was deleted in between.
        raise IntegrityError(f"blob {digest} vanished between a refused create and its HEAD; retry the write")
    if stored_size != size_bytes:
        raise IntegrityError(f"stored blob {digest} has {stored_size} bytes, the writer says {size_bytes}")
    return WriteOutcome.EXISTED


def _etag(value: str) -> str:
    return value.strip('"').lower()


def _is_hex(value: str) -> bool:
    return len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
