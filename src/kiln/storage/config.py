"""``TransferConfig``: every knob of an upload or download, validated once when it is built."""

from __future__ import annotations

import math
from dataclasses import dataclass

from kiln.errors import UsageError
from kiln.storage.base import MAX_PART_SIZE_BYTES, MAX_PARTS, MIN_PART_SIZE_BYTES

__all__ = ["TransferConfig"]

_MIB = 1024 * 1024


@dataclass(frozen=True)
class TransferConfig:
    """How ``upload_file`` and ``download_file`` move bytes.

    Retries: botocore retries the S3 *control* calls (HEAD, Create/Complete/List/Abort) itself;
    the *data* calls (each part, a single put, a GET) are retried here, ``part_attempts`` times
    with exponential backoff and full jitter, so no request is retried by both layers.

    Attributes
    ----------
    part_size_bytes
        Multipart part size (default 8 MiB, S3 allows 5 MiB..5 GiB). Raised automatically for a
        blob that would need more than 10,000 parts (see :meth:`part_size_for`).
    multipart_threshold_bytes
        Blobs up to this size are sent with one put; larger ones in parts.
    max_concurrency
        Parts in flight at once (a bounded executor; at most about twice this many parts are
        held in memory).
    part_attempts
        Tries per part (and per single put, per GET resume) before the transfer fails.
    backoff_base_s, backoff_cap_s
        The n-th retry waits a random time in ``[0, min(cap, base * 2**(n-1))]``.
    stall_timeout_s
        A request that makes no progress for this long fails and is retried (the socket read
        timeout of network backends).
    max_bandwidth_bytes_s
        Optional cap on upload throughput, summed over all parts in flight (None: no cap).
    """

    part_size_bytes: int = 8 * _MIB
    multipart_threshold_bytes: int = 16 * _MIB
    max_concurrency: int = 4
    part_attempts: int = 5
    backoff_base_s: float = 0.2
    backoff_cap_s: float = 10.0
    stall_timeout_s: float = 60.0
    max_bandwidth_bytes_s: int | None = None

    def __post_init__(self) -> None:
        problems = []
        if not MIN_PART_SIZE_BYTES <= self.part_size_bytes <= MAX_PART_SIZE_BYTES:
            problems.append(f"part_size_bytes must be 5 MiB..5 GiB, not {self.part_size_bytes}")
        if self.multipart_threshold_bytes < 0:
            problems.append(f"multipart_threshold_bytes must be >= 0, not {self.multipart_threshold_bytes}")
        if self.max_concurrency < 1:
            problems.append(f"max_concurrency must be >= 1, not {self.max_concurrency}")
        if self.part_attempts < 1:
            problems.append(f"part_attempts must be >= 1, not {self.part_attempts}")
        if self.backoff_base_s < 0 or self.backoff_cap_s < self.backoff_base_s:
            problems.append(
                f"need 0 <= backoff_base_s <= backoff_cap_s, not {self.backoff_base_s}, {self.backoff_cap_s}"
            )
        if self.stall_timeout_s <= 0:
            problems.append(f"stall_timeout_s must be > 0, not {self.stall_timeout_s}")
        if self.max_bandwidth_bytes_s is not None and self.max_bandwidth_bytes_s <= 0:
            problems.append(f"max_bandwidth_bytes_s must be > 0 or None, not {self.max_bandwidth_bytes_s}")
        if problems:
            raise UsageError("invalid TransferConfig: " + "; ".join(problems))

    def part_size_for(self, size_bytes: int) -> int:
        """Return the part size for a blob: ``part_size_bytes``, raised (to whole MiB) so parts <= 10,000."""
        if math.ceil(size_bytes / self.part_size_bytes) <= MAX_PARTS:
            return self.part_size_bytes
        raised = math.ceil(size_bytes / MAX_PARTS / _MIB) * _MIB
        if raised > MAX_PART_SIZE_BYTES:
            raise UsageError(f"a {size_bytes}-byte blob does not fit in {MAX_PARTS} parts of at most 5 GiB")
        return raised

    def backoff_s(self, retry: int, unit_random: float) -> float:
        """Return the wait before retry number ``retry`` (1-based), given a uniform draw in [0, 1)."""
        return unit_random * min(self.backoff_cap_s, self.backoff_base_s * 2 ** (retry - 1))
