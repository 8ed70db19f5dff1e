"""Identifiers for runs, jobs and attempts: ULIDs, sortable by creation time.

A ULID is 48 bits of milliseconds since the epoch followed by 80 random bits, written in Crockford
base32 (26 characters). Sorting ids sorts by creation time (to the millisecond), which keeps
listings and index pages in a useful order without a second column. The time part comes from the
caller's timestamp, so tests that inject a clock get reproducible prefixes.
"""

from __future__ import annotations

import secrets
from datetime import datetime

__all__ = ["new_id"]

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_id(at: datetime) -> str:
    """Return a new ULID whose time part is ``at``.

    Parameters
    ----------
    at
        A timezone-aware timestamp; times before the epoch are clamped to it.

    Returns
    -------
    str
        26 characters of Crockford base32.
    """
    millis = max(0, int(at.timestamp() * 1000)) & ((1 << 48) - 1)
    value = (millis << 80) | secrets.randbits(80)
    chars = []
    for _ in range(26):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))
