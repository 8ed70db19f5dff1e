"""HMAC-signed per-object grants for blobs the control plane serves itself (file and memory backends).

A grant lets its holder GET or PUT exactly one blob until ``expires_at``. The control plane hands
the URL to a runner, and later checks it with :func:`verify_url` when the runner calls back. The
signature covers the method, the digest and the expiry, so a grant for one object never opens
another, and changing the expiry breaks it. The S3 backend uses real presigned URLs instead.

A *part* grant (:func:`part_grant_url`, :func:`verify_part_url`) lets its holder upload exactly one
part number of exactly one multipart upload, the HMAC counterpart of a presigned UploadPart URL.
Its message has a different first field, so no token can be replayed as the other kind.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
from typing import cast
from urllib.parse import parse_qs, urlsplit

from kiln.errors import Unauthorized
from kiln.storage.base import GrantMethod
from kiln.storage.digests import BLOB_DIR, digest_from_hex, digest_to_hex

__all__ = [
    "expiry",
    "grant_url",
    "part_grant_url",
    "sign",
    "sign_part",
    "verify",
    "verify_part_url",
    "verify_url",
]

_PATH_RE = re.compile(r"/" + re.escape(BLOB_DIR) + r"/([0-9a-f]{64})$")
# Upload ids are "<hex digest>.<backend id>"; the backend id of the HMAC backends is hex too.
_PART_PATH_RE = re.compile(r"/uploads/([0-9a-f]{64}\.[0-9A-Za-z_-]{1,200})/parts/([0-9]{1,5})$")
_METHODS = ("GET", "PUT")


def expiry(now: float, expires_s: float) -> int:
    """The whole second a grant made at ``now`` for ``expires_s`` seconds expires: rounded up, so it
    lasts at least what was asked (signatures hold whole seconds)."""
    return math.ceil(now + expires_s)


def sign(method: GrantMethod, digest: str, expires_at: int, secret: bytes) -> str:
    """Return the hex HMAC-SHA256 token granting ``method`` on ``digest`` until ``expires_at``.

    Parameters
    ----------
    method
        ``"GET"`` or ``"PUT"``.
    digest
        The blob's digest.
    expires_at
        Unix time (whole seconds) after which the grant is refused.
    secret
        The control plane's grant key (at least 16 bytes).
    """
    if method not in _METHODS:
        raise ValueError(f"grant method must be GET or PUT, not {method!r}")
    return _mac(secret, f"kiln-grant-v1\n{method}\n{digest_to_hex(digest)}\n{int(expires_at)}")


def sign_part(upload_id: str, part_number: int, expires_at: int, secret: bytes) -> str:
    """Return the hex HMAC-SHA256 token granting a PUT of one part of one upload until ``expires_at``."""
    return _mac(secret, f"kiln-part-grant-v1\nPUT\n{upload_id}\n{int(part_number)}\n{int(expires_at)}")


def _mac(secret: bytes, message: str) -> str:
    if len(secret) < 16:
        raise ValueError("grant secret must be at least 16 bytes")
    return hmac.new(secret, message.encode(), hashlib.sha256).hexdigest()


def verify(token: str, method: str, digest: str, expires_at: int, secret: bytes, *, now: float) -> None:
    """Check a grant token; return if it is valid, raise Unauthorized otherwise.

    Raises
    ------
    Unauthorized
        If the grant has expired, or the token was not made for this method, digest and expiry.
    """
    if method not in _METHODS:
        raise Unauthorized(f"grants cover GET and PUT, not {method}")
    if now >= expires_at:
        raise Unauthorized("the blob grant has expired")
    expected = sign(cast(GrantMethod, method), digest, expires_at, secret)
    # Constant-time: the comparison must not reveal how many leading characters were right.
    if not hmac.compare_digest(expected, token):
        raise Unauthorized("the blob grant does not cover this request")


def grant_url(base_url: str, method: GrantMethod, digest: str, expires_at: int, secret: bytes) -> str:
    """Return ``<base_url>/blobs/sha256/<hex>?expires=<t>&sig=<token>``.

    ``base_url`` is where the control plane serves blobs (empty for a path-only URL).
    """
    token = sign(method, digest, expires_at, secret)
    return f"{base_url.rstrip('/')}/{BLOB_DIR}/{digest_to_hex(digest)}?expires={int(expires_at)}&sig={token}"


def verify_url(url: str, method: str, secret: bytes, *, now: float) -> str:
    """Check a grant URL presented with an HTTP ``method``; return the digest it grants.

    Raises
    ------
    Unauthorized
        If the URL is malformed, expired, or not signed for this method and blob.
    """
    parts = urlsplit(url)
    match = _PATH_RE.search(parts.path)
    expires_at, token = _expiry_and_token(parts.query)
    if match is None:
        raise Unauthorized("the blob grant URL does not name a blob")
    digest = digest_from_hex(match.group(1))
    verify(token, method, digest, expires_at, secret, now=now)
    return digest


def part_grant_url(base_url: str, upload_id: str, part_number: int, expires_at: int, secret: bytes) -> str:
    """Return ``<base_url>/uploads/<upload_id>/parts/<n>?expires=<t>&sig=<token>``."""
    token = sign_part(upload_id, part_number, expires_at, secret)
    path = f"{base_url.rstrip('/')}/uploads/{upload_id}/parts/{int(part_number)}"
    return f"{path}?expires={int(expires_at)}&sig={token}"


def verify_part_url(url: str, method: str, secret: bytes, *, now: float) -> tuple[str, int]:
    """Check a part grant URL presented with an HTTP ``method``; return ``(upload_id, part_number)``.

    Raises
    ------
    Unauthorized
        If the URL is malformed, expired, not a PUT, or not signed for this upload and part.
    """
    parts = urlsplit(url)
    match = _PART_PATH_RE.search(parts.path)
    expires_at, token = _expiry_and_token(parts.query)
    if match is None:
        raise Unauthorized("the part grant URL does not name an upload part")
    if method != "PUT":
        raise Unauthorized(f"a part grant covers PUT, not {method}")
    if now >= expires_at:
        raise Unauthorized("the part grant has expired")
    upload_id, part_number = match.group(1), int(match.group(2))
    if not hmac.compare_digest(sign_part(upload_id, part_number, expires_at, secret), token):
        raise Unauthorized("the part grant does not cover this request")
    return upload_id, part_number


def _expiry_and_token(query_string: str) -> tuple[int, str]:
    query = parse_qs(query_string)
    try:
        return int(query["expires"][0]), query["sig"][0]
    except (KeyError, IndexError, ValueError):
        raise Unauthorized("the blob grant URL is malformed") from None
