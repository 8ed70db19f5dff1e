"""Multipart rules every backend shares: upload ids, part plans and completion lists.

All backends enforce S3's rules (parts 1..10,000; every part but the last at least 5 MiB; a
completion list in ascending order) so the file and memory backends cannot accept a sequence of
calls that S3 would refuse.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from kiln.errors import UploadNotFound, UsageError
from kiln.storage.base import MAX_PART_SIZE_BYTES, MAX_PARTS, MIN_PART_SIZE_BYTES, PartEntry

__all__ = ["check_completion", "check_part_number", "check_part_plan", "make_upload_id", "split_upload_id"]

_HEX_LEN = 64


def make_upload_id(hex_digest: str, raw_id: str) -> str:
    """Return kiln's upload id: the blob's hex digest, a dot, then the backend's own id."""
    return f"{hex_digest}.{raw_id}"


def split_upload_id(upload_id: str) -> tuple[str, str]:
    """Return ``(hex_digest, raw_id)``; a malformed id names no upload (UploadNotFound)."""
    hex_digest, dot, raw_id = (
        upload_id[:_HEX_LEN],
        upload_id[_HEX_LEN : _HEX_LEN + 1],
        upload_id[_HEX_LEN + 1 :],
    )
    if (
        dot != "."
        or not raw_id
        or any(c not in "0123456789abcdef" for c in hex_digest)
        or len(hex_digest) != 64
    ):
        raise UploadNotFound(f"no such upload: {upload_id!r}")
    return hex_digest, raw_id


def check_part_plan(size_bytes: int, part_size_bytes: int) -> int:
    """Check a multipart plan and return its number of parts.

    Raises
    ------
    UsageError
        If the part size is outside 5 MiB..5 GiB or the blob would need more than 10,000 parts.
    """
    if size_bytes < 0:
        raise UsageError(f"blob size must be >= 0, not {size_bytes}")
    if not MIN_PART_SIZE_BYTES <= part_size_bytes <= MAX_PART_SIZE_BYTES:
        raise UsageError(f"part size must be 5 MiB..5 GiB, not {part_size_bytes} bytes")
    parts = max(1, math.ceil(size_bytes / part_size_bytes))
    if parts > MAX_PARTS:
        raise UsageError(
            f"{size_bytes} bytes in {part_size_bytes}-byte parts needs {parts} parts (max {MAX_PARTS})"
        )
    return parts


def check_part_number(part_number: int) -> None:
    """Raise UsageError unless ``part_number`` is in 1..10,000."""
    if not 1 <= part_number <= MAX_PARTS:
        raise UsageError(f"part number must be 1..{MAX_PARTS}, not {part_number}")


def check_completion(parts: Sequence[PartEntry]) -> int:
    """Check a completion list and return the blob's total size.

    Raises
    ------
    UsageError
        If the list is empty, not strictly ascending, or a part other than the last is under 5 MiB.
    """
    if not parts:
        raise UsageError("a multipart upload needs at least one part to complete")
    previous = 0
    for index, part in enumerate(parts):
        check_part_number(part.part_number)
        if part.part_number <= previous:
            raise UsageError("parts must be listed in strictly ascending part-number order")
        previous = part.part_number
        if index < len(parts) - 1 and part.size_bytes < MIN_PART_SIZE_BYTES:
            raise UsageError(
                f"part {part.part_number} is {part.size_bytes} bytes; all but the last must be >= 5 MiB"
            )
    return sum(part.size_bytes for part in parts)
