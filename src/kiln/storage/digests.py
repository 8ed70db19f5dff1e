"""Digest strings: parsing, formatting and hashing files.

kiln spells a digest ``"sha256:<64 lowercase hex>"`` (the OCI form). Only sha256 is accepted: a
second algorithm would give one blob two addresses.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re

from kiln.errors import UsageError

__all__ = [
    "BLOB_DIR",
    "digest_bytes",
    "digest_file",
    "digest_from_hex",
    "digest_to_b64",
    "digest_to_hex",
    "is_digest",
]

#: Where blobs live below a store's root or prefix.
BLOB_DIR = "blobs/sha256"

_DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")
_HEX_RE = re.compile(r"[0-9a-f]{64}")
_CHUNK_BYTES = 1024 * 1024


def is_digest(value: str) -> bool:
    """Return whether ``value`` is a well-formed ``sha256:<hex>`` digest."""
    return _DIGEST_RE.fullmatch(value) is not None


def digest_to_hex(digest: str) -> str:
    """Return the 64-character hex part of ``digest``.

    Raises
    ------
    UsageError
        If ``digest`` is not ``sha256:`` followed by 64 lowercase hex characters.
    """
    if not isinstance(digest, str) or _DIGEST_RE.fullmatch(digest) is None:
        raise UsageError(f"not a sha256 digest: {digest!r} (expected 'sha256:' + 64 lowercase hex)")
    return digest[7:]


def digest_from_hex(hex_digest: str) -> str:
    """Return the digest string for a 64-character lowercase hex sha256."""
    if _HEX_RE.fullmatch(hex_digest) is None:
        raise UsageError(f"not a sha256 hex digest: {hex_digest!r}")
    return f"sha256:{hex_digest}"


def digest_to_b64(digest: str) -> str:
    """Return the digest as base64 of the raw 32 bytes (the form of S3's x-amz-checksum-sha256)."""
    return base64.b64encode(bytes.fromhex(digest_to_hex(digest))).decode("ascii")


def digest_bytes(data: bytes) -> str:
    """Return the digest of ``data``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def digest_file(path: str | os.PathLike[str]) -> tuple[str, int]:
    """Return ``(digest, size_bytes)`` of the file at ``path``, read in 1 MiB chunks."""
    hasher = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK_BYTES):
            hasher.update(chunk)
            size += len(chunk)
    return "sha256:" + hasher.hexdigest(), size
