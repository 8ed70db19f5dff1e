"""Count words in a text: a small module for kiln's example workflow."""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter

_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?")


def words(text: str) -> list[str]:
    """Return the words of ``text``, lower-cased, in order (digits and punctuation are not words)."""
    return [match.group(0).lower() for match in _WORD.finditer(text)]


def top_words(text: str, n: int) -> list[tuple[str, int]]:
    """Return the ``n`` most frequent words with their counts; ties keep first-seen order."""
    return Counter(words(text)).most_common(n)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Print the most frequent words of stdin.")
    parser.add_argument("--top", type=int, default=5, help="how many words to print")
    args = parser.parse_args(argv)
    for word, count in top_words(sys.stdin.read(), args.top):
        print(f"{count:6d} {word}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
