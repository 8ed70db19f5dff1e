"""A streaming reader that verifies a blob's sha256 while it is read.

Every backend's ``open`` returns one of these around its raw byte stream, so verification on read
is written once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Protocol

from kiln.errors import DigestMismatch
from kiln.storage.base import Hasher

__all__ = ["RawStream", "VerifyingReader"]

_DEFAULT_CHUNK_BYTES = 1024 * 1024


class RawStream(Protocol):
    """What the reader needs from a backend's stream: ``read(n)`` returning ``b""`` at the end."""

    def read(self, n: int = -1, /) -> bytes: ...


class VerifyingReader:
    """Stream ``size_bytes - offset`` bytes from ``raw`` and check the sha256 of the whole blob.

    The digest is checked as soon as the last byte arrives, *before* that chunk is returned: a
    consumer that reads exactly ``size_bytes`` and never asks for more is still protected. A
    stream that ends early or runs long raises DigestMismatch too.

    Parameters
    ----------
    raw
        The backend's stream, positioned at ``offset``.
    digest
        The blob's digest (``sha256:<hex>``).
    size_bytes
        The blob's full size.
    offset
        Where ``raw`` starts; ``hasher`` must then already hold bytes ``[0, offset)``.
    hasher
        A sha256 hasher to continue (fresh if None). It is updated with every byte returned.
    on_close
        Called once when the reader is closed (the backend releases its file or connection).
    """

    def __init__(
        self,
        raw: RawStream,
        *,
        digest: str,
        size_bytes: int,
        offset: int = 0,
        hasher: Hasher | None = None,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        if offset > 0 and hasher is None:
            raise ValueError("resuming a verified read at an offset needs the hasher of the bytes before it")
        if not 0 <= offset <= size_bytes:
            raise ValueError(f"offset {offset} outside a blob of {size_bytes} bytes")
        self.size_bytes = size_bytes
        self._raw = raw
        self._expected_hex = digest.removeprefix("sha256:")
        self._digest = digest
        self._position = offset
        self._hasher: Hasher = hasher if hasher is not None else hashlib.sha256()
        self._on_close = on_close
        self._verified = False
        self._closed = False

    @property
    def position(self) -> int:
        """How many bytes of the blob have been read (including the starting offset)."""
        return self._position

    def read(self, n: int = -1, /) -> bytes:
        """Return up to ``n`` bytes (all the rest if ``n`` < 0); ``b""`` once the blob is verified."""
        if self._closed:
            raise ValueError("read from a closed blob reader")
        remaining = self.size_bytes - self._position
        if remaining == 0:
            self._verify()
            # One more byte would mean the stored object is longer than its size said.
            if self._raw.read(1):
                raise DigestMismatch(f"blob {self._digest} is longer than {self.size_bytes} bytes")
            return b""
        want = remaining if n is None or n < 0 else min(n, remaining)
        if want == 0:
            return b""
        chunk = self._raw.read(want)
        if not chunk:
            raise DigestMismatch(
                f"blob {self._digest} ended after {self._position} of {self.size_bytes} bytes"
            )
        if len(chunk) > want:  # a raw stream that ignores n; never trust it to stop
            raise DigestMismatch(f"blob {self._digest} is longer than {self.size_bytes} bytes")
        self._hasher.update(chunk)
        self._position += len(chunk)
        if self._position == self.size_bytes:
            self._verify()
        return chunk

    def readall(self) -> bytes:
        """Return the rest of the blob, verified."""
        parts = []
        while chunk := self.read(_DEFAULT_CHUNK_BYTES):
            parts.append(chunk)
        return b"".join(parts)

    def _verify(self) -> None:
        if self._verified:
            return
        actual = self._hasher.hexdigest()
        if actual != self._expected_hex:
            raise DigestMismatch(f"blob {self._digest} read back as sha256:{actual}")
        self._verified = True

    def close(self) -> None:
        """Release the backend's stream; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self._on_close is not None:
            self._on_close()

    def __enter__(self) -> VerifyingReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
