"""Proof of possession: how a tenant shows it holds a blob's bytes, not just its digest.

Blobs are shared by content across tenants, so an upload of bytes that some tenant stored already
sends nothing. A digest alone must not be enough for that short cut: whoever learned a digest
(from a log, a manifest, a summary) could otherwise claim the blob, reference it and read it. So
when the blob is stored and the uploading tenant does not hold it yet, the control plane asks for
a proof: the sha256 of a challenge it chooses followed by the blob's bytes. Only someone with the
bytes can compute it, and a proof for one challenge says nothing about another. The control plane
checks it by reading the stored blob once (this happens only for blobs another tenant stored).
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Iterable

from kiln.storage.base import Hasher

__all__ = ["proof_hasher", "proofs_match", "prove_chunks", "prove_file"]

_DOMAIN = b"kiln-possession-v1\0"
_CHUNK_BYTES = 1024 * 1024


def proof_hasher(challenge: str) -> Hasher:
    """A sha256 already fed the challenge: feed it the blob's bytes, then take ``hexdigest()``."""
    hasher = hashlib.sha256(_DOMAIN)
    hasher.update(challenge.encode() + b"\0")
    return hasher


def prove_chunks(challenge: str, chunks: Iterable[bytes]) -> str:
    """The proof for the bytes ``chunks`` yields, in order."""
    hasher = proof_hasher(challenge)
    for chunk in chunks:
        hasher.update(chunk)
    return hasher.hexdigest()


def prove_file(challenge: str, path: str | os.PathLike[str]) -> str:
    """The proof for the file at ``path``, read in 1 MiB chunks."""
    with open(path, "rb") as f:
        return prove_chunks(challenge, iter(lambda: f.read(_CHUNK_BYTES), b""))


def proofs_match(expected: str, given: str) -> bool:
    """Compare two proofs in constant time."""
    return hmac.compare_digest(expected.encode(), given.encode())
