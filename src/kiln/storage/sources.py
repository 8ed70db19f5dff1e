"""Reading what a caller hands to ``put``: bytes, a binary file object or a path."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO

from kiln.errors import DigestMismatch
from kiln.storage.base import BlobSource

__all__ = ["iter_chunks", "open_source"]

CHUNK_BYTES = 1024 * 1024


@contextmanager
def open_source(source: BlobSource) -> Iterator[BinaryIO]:
    """Yield a binary file object for ``source``; a path is opened and closed here, a file object is not."""
    if isinstance(source, bytes | bytearray | memoryview):
        yield io.BytesIO(source)
    elif isinstance(source, str | os.PathLike):
        with open(source, "rb") as f:
            yield f
    else:
        yield source


def iter_chunks(f: BinaryIO, size_bytes: int, digest: str, chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
    """Yield exactly ``size_bytes`` bytes of ``f`` in chunks.

    Raises
    ------
    DigestMismatch
        If ``f`` ends early or has bytes beyond ``size_bytes``: the source is not the blob it claims.
    """
    remaining = size_bytes
    while remaining:
        want = min(chunk_bytes, remaining)
        chunk = f.read(want)
        if not chunk:
            raise DigestMismatch(f"the source for {digest} ended {remaining} bytes short of {size_bytes}")
        if len(chunk) > want:
            raise DigestMismatch(f"the source for {digest} is longer than {size_bytes} bytes")
        remaining -= len(chunk)
        yield chunk
    if f.read(1):
        raise DigestMismatch(f"the source for {digest} is longer than {size_bytes} bytes")
