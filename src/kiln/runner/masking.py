"""Secret masking for a stream of text that arrives in arbitrary pieces.

Masking line by line is not enough: a secret may span two pieces, or contain a newline. The masker
therefore replaces every whole occurrence in what it holds, then holds back the longest tail that
could still grow into a secret, and releases only the rest. A secret is thus never released even
partly, wherever the pieces are cut.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["MASK", "SecretMasker", "StreamMasker"]

MASK = "***"
# Values this short would mask half the log ("1", "true"); they are still passed to the job.
_MIN_SECRET_LENGTH = 3


class SecretMasker:
    def __init__(self, secrets: Iterable[str]) -> None:
        values = {s for s in secrets if len(s) >= _MIN_SECRET_LENGTH}
        # A multi-line secret may also be printed one line at a time.
        values |= {line for s in list(values) for line in s.splitlines() if len(line) >= _MIN_SECRET_LENGTH}
        # Longest first, so a secret that contains another is masked whole.
        self._secrets = sorted(values, key=len, reverse=True)

    def __bool__(self) -> bool:
        return bool(self._secrets)

    def mask(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return text

    def unsafe_tail(self, text: str) -> int:
        """Length of the longest suffix of ``text`` that is a proper prefix of some secret."""
        longest = 0
        for secret in self._secrets:
            for n in range(min(len(secret) - 1, len(text)), longest, -1):
                if text.endswith(secret[:n]):
                    longest = n
                    break
        return longest


class StreamMasker:
    """Feed pieces in, get masked text out; ``flush`` releases the held tail at the end."""

    def __init__(self, masker: SecretMasker) -> None:
        self._masker = masker
        self._held = ""

    def feed(self, piece: str) -> str:
        text = self._masker.mask(self._held + piece)
        keep = self._masker.unsafe_tail(text)
        self._held = text[len(text) - keep :] if keep else ""
        return text[: len(text) - keep]

    def flush(self) -> str:
        text, self._held = self._masker.mask(self._held), ""
        return text
