"""``file:///path``: the embedded default blob store, with the same semantics as S3.

Layout below the root::

    blobs/sha256/<hex>              published blobs, read-only (0444), never rewritten
    uploads/<upload_id>/meta.json   one directory per upload (multipart, and every single put too)
    uploads/<upload_id>/p00001.<md5>  an uploaded part; its name carries its ETag
    trash/                          aborted upload directories, renamed here, then deleted

Why it is safe:

* A blob is written to a file inside its upload directory, fsynced and verified against its
  digest, and only then published with ``link()``, which fails if the name exists. So the first
  writer wins, every later one gets ``EXISTED``, and nobody can ever see a half-written blob at
  ``blobs/sha256/<hex>``.
* A part is written to a temporary name and renamed into place, so ``list_parts`` never lists a
  part a killed uploader left half written.
* Even a single ``put`` stages inside ``uploads/``, so whatever a killed writer leaves behind is
  listed by ``list_uploads`` and removed by the janitor like any abandoned multipart upload.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

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
from kiln.storage.digests import BLOB_DIR, digest_from_hex, digest_to_hex
from kiln.storage.fsutil import fsync_dir, write_atomic
from kiln.storage.multipart import (
    check_completion,
    check_part_number,
    check_part_plan,
    make_upload_id,
    split_upload_id,
)
from kiln.storage.reader import VerifyingReader
from kiln.storage.sources import CHUNK_BYTES, iter_chunks, open_source

__all__ = ["LocalBlobStore"]

_UPLOAD_ID_RE = re.compile(r"[0-9a-f]{64}\.[0-9a-f]{16}")
_PART_RE = re.compile(r"p(\d{5})\.([0-9a-f]{32})")
_HEX_RE = re.compile(r"[0-9a-f]{64}")
_META = "meta.json"


class LocalBlobStore:
    """A blob store in a local directory.

    Parameters
    ----------
    root
        The store's directory; created if missing.
    fsync
        fsync files and directories before publishing (turn off only for throwaway test data).
    clock
        Unix time, for grant expiry.
    grant_secret
        HMAC key for grant URLs; a random per-instance key if None (grants then only verify in
        this process).
    grant_base_url
        Where the control plane serves blobs, prefixed to grant URLs.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        fsync: bool = True,
        clock: Callable[[], float] = time.time,
        grant_secret: bytes | str | None = None,
        grant_base_url: str = "",
    ) -> None:
        self.root = Path(root)
        self._blobs = self.root / BLOB_DIR
        self._uploads = self.root / "uploads"
        self._trash = self.root / "trash"
        for directory in (self._blobs, self._uploads, self._trash):
            directory.mkdir(parents=True, exist_ok=True)
        self._fsync = fsync
        self._clock = clock
        if isinstance(grant_secret, str):
            grant_secret = grant_secret.encode()
        self.grant_secret = grant_secret if grant_secret is not None else secrets.token_bytes(32)
        self._grant_base_url = grant_base_url

    @classmethod
    def from_url(cls, url: str, **options: Any) -> LocalBlobStore:
        """Open ``file:///abs/path[?fsync=0]``."""
        parts = urlsplit(url)
        if parts.scheme != "file" or parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise UsageError(f"a file store URL is file:///absolute/path, not {url!r}")
        for key, values in parse_qs(parts.query, keep_blank_values=True).items():
            if key != "fsync":
                raise UsageError(f"unknown option {key!r} in {url!r} (known: fsync)")
            options.setdefault("fsync", values[-1] not in ("0", "false", "no"))
        return cls(unquote(parts.path), **options)

    @property
    def capabilities(self) -> Capabilities:
        """link() makes every create conditional, and every write is verified before publishing."""
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
        return self._blob_path(digest).exists()

    def stat(self, digest: str) -> int:
        """Return the blob's size; raise BlobNotFound."""
        try:
            return self._blob_path(digest).stat().st_size
        except FileNotFoundError:
            raise BlobNotFound(f"no blob {digest}") from None

    def put(
        self, digest: str, source: BlobSource, size_bytes: int, *, timeout_s: float | None = None
    ) -> WriteOutcome:
        """Store the blob create-only: stage, fsync, verify, then ``link()`` into place."""
        hex_digest = digest_to_hex(digest)
        if (existing := self._existing_size(hex_digest)) is not None:
            return _existed(digest, existing, size_bytes)
        upload_dir = self._make_upload_dir(hex_digest, size_bytes, None)
        try:
            staged = upload_dir / "data"
            hasher = hashlib.sha256()
            with open_source(source) as src, open(staged, "xb") as out:
                for chunk in iter_chunks(src, size_bytes, digest):
                    hasher.update(chunk)
                    out.write(chunk)
                self._sync_file(out)
            if hasher.hexdigest() != hex_digest:
                raise DigestMismatch(f"the bytes written for {digest} hash to sha256:{hasher.hexdigest()}")
            return self._publish(staged, hex_digest, size_bytes)
        finally:
            self._discard(upload_dir)

    def open(
        self,
        digest: str,
        *,
        offset: int = 0,
        hasher: Hasher | None = None,
        timeout_s: float | None = None,
    ) -> VerifyingReader:
        """Open the blob for a verified streaming read."""
        try:
            f = open(self._blob_path(digest), "rb")  # noqa: SIM115 (closed by the reader)
        except FileNotFoundError:
            raise BlobNotFound(f"no blob {digest}") from None
        try:
            size = os.fstat(f.fileno()).st_size
            f.seek(offset)
            return VerifyingReader(
                f, digest=digest, size_bytes=size, offset=offset, hasher=hasher, on_close=f.close
            )
        except BaseException:
            f.close()
            raise

    def delete(self, digest: str) -> None:
        """Delete the blob if stored."""
        with contextlib.suppress(FileNotFoundError):
            self._blob_path(digest).unlink()

    def list_blobs(self) -> Iterator[BlobEntry]:
        """Yield every blob with its size and mtime."""
        with os.scandir(self._blobs) as entries:
            for entry in entries:
                if not _HEX_RE.fullmatch(entry.name):
                    continue
                try:
                    st = entry.stat()
                except FileNotFoundError:  # deleted while we listed
                    continue
                yield BlobEntry(digest_from_hex(entry.name), st.st_size, _utc(st.st_mtime))

    # -- multipart -------------------------------------------------------------------------------

    def create_upload(self, digest: str, size_bytes: int, part_size_bytes: int) -> str:
        """Start a multipart upload: a directory under ``uploads/``."""
        hex_digest = digest_to_hex(digest)
        check_part_plan(size_bytes, part_size_bytes)
        return self._make_upload_dir(hex_digest, size_bytes, part_size_bytes).name

    def upload_part(
        self, upload_id: str, part_number: int, data: bytes, *, timeout_s: float | None = None
    ) -> str:
        """Write one part under a temporary name, then rename it to ``p<n>.<md5>``."""
        check_part_number(part_number)
        upload_dir = self._upload_dir(upload_id)
        etag = hashlib.md5(data).hexdigest()
        final = upload_dir / f"p{part_number:05d}.{etag}"
        tmp = upload_dir / f".part-{part_number:05d}-{secrets.token_hex(6)}"
        try:
            with open(tmp, "xb") as out:
                out.write(data)
                self._sync_file(out)
            os.replace(tmp, final)
        except FileNotFoundError:  # the upload was aborted or completed under us
            raise UploadNotFound(f"no such upload: {upload_id}") from None
        # Drop an older version of this part number (a re-upload replaces the part, as in S3).
        prefix = f"p{part_number:05d}."
        with contextlib.suppress(FileNotFoundError), os.scandir(upload_dir) as entries:
            stale = [e.path for e in entries if e.name.startswith(prefix) and e.name != final.name]
        for path in stale:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        return etag

    def list_parts(self, upload_id: str) -> list[PartEntry]:
        """Return the parts uploaded so far, ascending."""
        upload_dir = self._upload_dir(upload_id)
        found: dict[int, tuple[int, PartEntry]] = {}
        try:
            with os.scandir(upload_dir) as entries:
                for entry in entries:
                    match = _PART_RE.fullmatch(entry.name)
                    if match is None:
                        continue
                    with contextlib.suppress(FileNotFoundError):
                        st = entry.stat()
                        n = int(match.group(1))
                        # Two versions can coexist for a moment during a re-upload: newest wins.
                        if n not in found or st.st_mtime_ns > found[n][0]:
                            found[n] = (st.st_mtime_ns, PartEntry(n, st.st_size, match.group(2)))
        except FileNotFoundError:
            raise UploadNotFound(f"no such upload: {upload_id}") from None
        return [found[n][1] for n in sorted(found)]

    def complete_upload(self, upload_id: str, parts: Sequence[PartEntry]) -> WriteOutcome:
        """Concatenate the parts, fsync, verify the digest, publish with ``link()``."""
        total = check_completion(parts)
        hex_digest, _ = split_upload_id(upload_id)
        try:
            upload_dir = self._upload_dir(upload_id)
            meta = self._read_meta(upload_dir)
        except UploadNotFound:
            # Completed earlier (the answer was lost) or aborted: only the blob itself can tell.
            if self._existing_size(hex_digest) == total:
                return WriteOutcome.EXISTED
            raise
        digest = digest_from_hex(hex_digest)
        if total != meta["size_bytes"]:
            raise DigestMismatch(
                f"the parts of {upload_id} add up to {total} bytes, not {meta['size_bytes']}"
            )
        if (existing := self._existing_size(hex_digest)) is not None:
            self.abort_upload(upload_id)
            return _existed(digest, existing, total)
        assembled = upload_dir / f".assembled-{secrets.token_hex(6)}"
        try:
            hasher = hashlib.sha256()
            with open(assembled, "xb") as out:
                for part in parts:
                    self._append_part(upload_dir, part, out, hasher)
                self._sync_file(out)
            if hasher.hexdigest() != hex_digest:
                raise DigestMismatch(f"the parts of {upload_id} assemble to sha256:{hasher.hexdigest()}")
            outcome = self._publish(assembled, hex_digest, total)
        except FileNotFoundError:
            raise UploadNotFound(f"no such upload: {upload_id}") from None
        finally:
            with contextlib.suppress(FileNotFoundError):
                assembled.unlink()
        self.abort_upload(upload_id)  # the parts are no longer needed
        return outcome

    def abort_upload(self, upload_id: str) -> None:
        """Move the upload's directory to the trash, then delete it; unknown ids are fine."""
        if _UPLOAD_ID_RE.fullmatch(upload_id):  # anything else names no upload of ours
            self._discard(self._uploads / upload_id)

    def list_uploads(self) -> Iterator[UploadEntry]:
        """Yield every upload directory (multipart uploads and puts a killed writer left behind)."""
        with os.scandir(self._uploads) as entries:
            for entry in entries:
                if not _UPLOAD_ID_RE.fullmatch(entry.name):
                    continue
                try:
                    initiated_at = float(self._read_meta(Path(entry.path))["initiated_at"])
                except (UploadNotFound, KeyError, ValueError, TypeError):
                    # Killed between mkdir and writing meta.json: the directory's mtime will do.
                    try:
                        initiated_at = entry.stat().st_mtime
                    except FileNotFoundError:
                        continue
                yield UploadEntry(entry.name, digest_from_hex(entry.name[:64]), _utc(initiated_at))

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
        """No extra headers: the control plane verifies what it is sent with ``put``."""
        digest_to_hex(digest)
        return {}

    def close(self) -> None:
        """Nothing to release."""

    # -- internals -------------------------------------------------------------------------------

    def _blob_path(self, digest: str) -> Path:
        return self._blobs / digest_to_hex(digest)

    def _existing_size(self, hex_digest: str) -> int | None:
        try:
            return (self._blobs / hex_digest).stat().st_size
        except FileNotFoundError:
            return None

    def _make_upload_dir(self, hex_digest: str, size_bytes: int, part_size_bytes: int | None) -> Path:
        upload_dir = self._uploads / make_upload_id(hex_digest, secrets.token_hex(8))
        upload_dir.mkdir()
        meta = {
            "digest": digest_from_hex(hex_digest),
            "size_bytes": size_bytes,
            "part_size_bytes": part_size_bytes,
            "initiated_at": time.time(),  # real time: abandoned-upload age is judged on disk
        }
        write_atomic(upload_dir / _META, json.dumps(meta).encode(), fsync=self._fsync)
        return upload_dir

    def _upload_dir(self, upload_id: str) -> Path:
        if not _UPLOAD_ID_RE.fullmatch(upload_id):  # also keeps ids from naming paths elsewhere
            raise UploadNotFound(f"no such upload: {upload_id!r}")
        upload_dir = self._uploads / upload_id
        if not upload_dir.is_dir():
            raise UploadNotFound(f"no such upload: {upload_id}")
        return upload_dir

    @staticmethod
    def _read_meta(upload_dir: Path) -> dict[str, Any]:
        try:
            meta: dict[str, Any] = json.loads((upload_dir / _META).read_bytes())
        except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
            raise UploadNotFound(f"no such upload: {upload_dir.name}") from None
        return meta

    @staticmethod
    def _append_part(upload_dir: Path, part: PartEntry, out: Any, hasher: Any) -> None:
        path = upload_dir / f"p{part.part_number:05d}.{part.etag}"
        try:
            f = open(path, "rb")  # noqa: SIM115
        except FileNotFoundError:
            if not upload_dir.is_dir():
                raise
            raise IntegrityError(
                f"part {part.part_number} with ETag {part.etag} is not in {upload_dir.name}"
            ) from None
        with f:
            if os.fstat(f.fileno()).st_size != part.size_bytes:
                raise IntegrityError(
                    f"part {part.part_number} of {upload_dir.name} is not {part.size_bytes} bytes"
                )
            while chunk := f.read(CHUNK_BYTES):
                hasher.update(chunk)
                out.write(chunk)

    def _publish(self, staged: Path, hex_digest: str, size_bytes: int) -> WriteOutcome:
        """Create ``blobs/sha256/<hex>`` as a hard link to the verified, fsynced staged file."""
        os.chmod(staged, 0o444)  # published blobs are never written again
        target = self._blobs / hex_digest
        try:
            os.link(staged, target)
        except FileExistsError:
            existing = self._existing_size(hex_digest)
            return _existed(digest_from_hex(hex_digest), existing if existing is not None else -1, size_bytes)
        if self._fsync:
            fsync_dir(self._blobs)
        return WriteOutcome.CREATED

    def _discard(self, upload_dir: Path) -> None:
        # Rename first so the upload disappears atomically for every other caller, then delete.
        doomed = self._trash / f"{upload_dir.name}.{secrets.token_hex(4)}"
        try:
            os.rename(upload_dir, doomed)
        except FileNotFoundError:
            return
        shutil.rmtree(doomed, ignore_errors=True)

    def _sync_file(self, f: Any) -> None:
        if self._fsync:
            f.flush()
            os.fsync(f.fileno())


def _existed(digest: str, stored_size: int, size_bytes: int) -> WriteOutcome:
    if stored_size != size_bytes:
        raise IntegrityError(f"stored blob {digest} has {stored_size} bytes, the writer says {size_bytes}")
    return WriteOutcome.EXISTED


def _utc(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)
