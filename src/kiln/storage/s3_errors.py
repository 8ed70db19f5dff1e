"""Translate botocore errors into kiln's error tree, once, at the S3 boundary.

The translation also decides what the transfer layer retries: ``StorageUnavailable`` itself is a
transient fault (network, 5xx, throttling) and is retried part by part; its subclasses
``BlobNotFound``, ``UploadNotFound`` and ``StorageRefused`` are answers, and are not.
"""

from __future__ import annotations

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
    NoRegionError,
    ParamValidationError,
    PartialCredentialsError,
)

from kiln.errors import (
    AlreadyCommitted,
    BlobNotFound,
    Conflict,
    DigestMismatch,
    IntegrityError,
    KilnError,
    StorageRefused,
    StorageUnavailable,
    UploadNotFound,
)

__all__ = ["error_code", "translate"]

# Codes that mean "try again later": the request itself was fine.
_TRANSIENT_CODES = frozenset(
    {
        "InternalError",
        "ServiceUnavailable",
        "SlowDown",
        "RequestTimeout",
        "RequestTimeoutException",
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "OperationAborted",
    }
)
_DIGEST_CODES = frozenset({"BadDigest", "InvalidDigest", "XAmzContentSHA256Mismatch"})


def error_code(exc: BaseException) -> tuple[str, int]:
    """Return ``(code, http_status)`` of a ClientError, or ``("", 0)`` for anything else."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return str(error.get("Code", "")), int(status or 0)
    return "", 0


def translate(exc: BaseException, what: str) -> KilnError:
    """Return the kiln error for a botocore (or socket) error raised while doing ``what``.

    ``what`` names the operation and object for the message, e.g. ``"HEAD blobs/sha256/ab…"``.
    """
    if isinstance(exc, KilnError):
        return exc
    if isinstance(exc, ClientError):
        code, status = error_code(exc)
        message = f"S3 {what}: {code or status}"
        if code in ("NoSuchKey", "NotFound") or (status == 404 and code in ("", "404")):
            return BlobNotFound(message)
        if code == "NoSuchUpload":
            return UploadNotFound(message)
        if code == "PreconditionFailed" or status == 412:
            return AlreadyCommitted(message)
        if code == "ConditionalRequestConflict" or status == 409:
            return Conflict(message)
        if code in _DIGEST_CODES:
            return DigestMismatch(message)
        if code == "InvalidPart":
            return IntegrityError(message)
        if code in _TRANSIENT_CODES or status >= 500 or status in (408, 429):
            return StorageUnavailable(message)
        return StorageRefused(message)
    if isinstance(exc, NoCredentialsError | PartialCredentialsError | NoRegionError | ParamValidationError):
        return StorageRefused(f"S3 {what}: {exc}")
    if isinstance(exc, BotoCoreError | OSError):
        # Connection refused or reset, timeouts, truncated bodies: the network, not the request.
        return StorageUnavailable(f"S3 {what}: {type(exc).__name__}: {exc}")
    return StorageUnavailable(f"S3 {what}: unexpected {type(exc).__name__}: {exc}")
