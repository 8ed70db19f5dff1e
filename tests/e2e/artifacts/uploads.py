"""Helpers for watching an artifact upload from outside: shared by the resume test and its benchmark."""

from __future__ import annotations

import httpx

from kiln.errors import KilnError
from kiln.storage import BlobStore

__all__ = ["parts_stored", "ready"]


def parts_stored(store: BlobStore) -> int:
    """Parts stored so far of the multipart upload in flight (the largest if several; 0 if none)."""
    best = 0
    for upload in store.list_uploads():
        try:
            best = max(best, len({p.part_number for p in store.list_parts(upload.upload_id)}))
        except KilnError:  # the upload completed or was aborted between the two calls
            continue
    return best


def ready(url: str) -> bool:
    """Whether the control plane at ``url`` answers its readiness probe."""
    try:
        return httpx.get(f"{url}/readyz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
