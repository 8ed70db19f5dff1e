"""Finding a job's secret values in the bytes of files about to be cached.

A cache entry outlives the job and is read by other runs; a secret in it would leak to all of
them (ARCHITECTURE.md §5). Before a save, every file of the cache is searched for the value of
every secret the job was given, and for each line of a multi-line secret. Only the secret's *name*
is ever reported.

Values shorter than :data:`MIN_SCANNED_LENGTH` are not searched for: a two- or six-character
value matches by chance in any binary cache, and refusing every save would protect nothing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

__all__ = ["MIN_SCANNED_LENGTH", "SecretScanner"]

MIN_SCANNED_LENGTH = 8


class SecretScanner:
    """Search bytes for secret values; report which secrets (by name) were seen."""

    def __init__(self, secrets: Mapping[str, str]) -> None:
        needles: dict[bytes, str] = {}
        for name, value in sorted(secrets.items()):
            for candidate in {value, *value.splitlines()}:
                encoded = candidate.encode()
                if len(encoded) >= MIN_SCANNED_LENGTH:
                    needles.setdefault(encoded, name)
        self._names = needles
        # Longest first, so that a secret containing another is reported under its own name.
        ordered = sorted(needles, key=len, reverse=True)
        self._regex = re.compile(b"|".join(re.escape(n) for n in ordered)) if ordered else None
        self._overlap = max((len(n) for n in ordered), default=1) - 1

    def __bool__(self) -> bool:
        return self._regex is not None

    def names_in(self, data: bytes) -> set[str]:
        """Names of the secrets whose values occur in ``data``."""
        if self._regex is None:
            return set()
        return {self._names[m.group(0)] for m in self._regex.finditer(data)}

    def stream(self) -> _Stream:
        """A search over data fed in pieces; a value cut between two pieces is still found."""
        return _Stream(self)


class _Stream:
    def __init__(self, scanner: SecretScanner) -> None:
        self._scanner = scanner
        self._tail = b""
        self._found: set[str] = set()

    def feed(self, chunk: bytes) -> None:
        if not self._scanner:
            return
        data = self._tail + chunk
        self._found |= self._scanner.names_in(data)
        keep = self._scanner._overlap
        self._tail = data[-keep:] if keep else b""

    def found(self) -> set[str]:
        return set(self._found)
