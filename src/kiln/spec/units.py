"""Durations and sizes as users write them: ``timeout: 1h30m``, ``memory: 2g``.

Both parsers accept the plain number their unit-less form means (seconds, bytes) so that the
normalized values kiln stores (``timeout_s``, ``memory_bytes``) validate again unchanged.
The regular expressions are also published in the workflow's JSON Schema, so they are written
in the subset that Python's ``re`` and ECMA-262 (JSON Schema's dialect) read alike.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal

__all__ = [
    "DURATION_PATTERN",
    "SIZE_PATTERN",
    "format_duration",
    "format_size",
    "parse_duration",
    "parse_size",
]

_NUMBER = r"(?:[0-9]+(?:\.[0-9]+)?|\.[0-9]+)"
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
# "ms" must be tried before "m" and "s", hence the explicit order in the alternation.
_DURATION_PART = rf"{_NUMBER} *(?:ms|s|m|h|d)"

#: A duration: a plain number of seconds, or parts such as ``1h30m``, ``90s``, ``1.5h``, ``500ms``.
DURATION_PATTERN = rf"^ *(?:{_NUMBER}|{_DURATION_PART}(?: *{_DURATION_PART})*) *$"
_DURATION_RE = re.compile(DURATION_PATTERN)
_DURATION_PART_RE = re.compile(rf"({_NUMBER}) *(ms|s|m|h|d)")

_SIZE_SHIFT = {"": 0, "k": 10, "m": 20, "g": 30, "t": 40}
#: A size: plain bytes, or a number with a binary unit: ``256m``, ``2g``, ``512Mi``, ``1GiB``, ``100b``.
SIZE_PATTERN = r"^ *([0-9]+(?:\.[0-9]+)?) *(?:([KkMmGgTt])(?:[Ii])?[Bb]?|[Bb])? *$"
_SIZE_RE = re.compile(SIZE_PATTERN)

_DURATION_HINT = "use seconds or units like `90s`, `10m`, `1h30m`, `2h` (units: ms, s, m, h, d)"
_SIZE_HINT = "use bytes or a binary unit like `256m`, `2g`, `512Mi`, `1GiB` (k, m, g, t = KiB, MiB, GiB, TiB)"


def parse_duration(s: str | int | float) -> float:
    """Parse a duration into seconds.

    Parameters
    ----------
    s
        ``"90s"``, ``"10m"``, ``"1h30m"``, ``"1.5h"``, ``"500ms"``, or a plain number of seconds
        (``45``, ``"45"``, ``2.5``).

    Returns
    -------
    float
        The duration in seconds, always greater than zero.

    Raises
    ------
    ValueError
        The text is not a duration, or the duration is zero, negative or not finite.
    TypeError
        ``s`` is neither a string nor a number (``bool`` counts as neither).
    """
    if isinstance(s, bool) or not isinstance(s, str | int | float):
        raise TypeError(f"a duration must be a string or a number, not {type(s).__name__}")
    if isinstance(s, str):
        if not _DURATION_RE.fullmatch(s):
            raise ValueError(f"invalid duration `{s}`: {_DURATION_HINT}")
        parts = _DURATION_PART_RE.findall(s)
        seconds = sum(float(n) * _DURATION_UNITS[u] for n, u in parts) if parts else float(s)
        shown = s.strip()
    else:
        seconds = float(s)
        shown = str(s)
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"invalid duration `{shown}`: it must be longer than zero")
    return seconds


def parse_size(s: str | int) -> int:
    """Parse a size into bytes; every unit is binary (``m`` is MiB, as in Docker and cgroups).

    Parameters
    ----------
    s
        ``"256m"``, ``"2g"``, ``"512Mi"``, ``"1GiB"``, ``"1024k"``, ``"100b"``, or plain bytes
        (``1048576``, ``"1048576"``). Fractions are allowed with a unit (``"1.5g"``) and are
        rounded down to whole bytes.

    Returns
    -------
    int
        The size in bytes, at least 1.

    Raises
    ------
    ValueError
        The text is not a size, or the size is zero or negative.
    TypeError
        ``s`` is neither a string nor an integer (``bool`` counts as neither).
    """
    if isinstance(s, bool) or not isinstance(s, str | int):
        raise TypeError(f"a size must be a string or an integer, not {type(s).__name__}")
    if isinstance(s, int):
        size, shown = s, str(s)
    else:
        match = _SIZE_RE.fullmatch(s)
        if match is None:
            raise ValueError(f"invalid size `{s}`: {_SIZE_HINT}")
        number, unit = match.group(1), (match.group(2) or "").lower()
        if "." in number and not unit:
            raise ValueError(f"invalid size `{s}`: a fraction needs a unit (`1.5g`); bytes are whole")
        # Decimal, not float: "1.1g" must not become 1181116006.3999999 and round the wrong way.
        size, shown = int(Decimal(number) * (1 << _SIZE_SHIFT[unit])), s.strip()
    if size <= 0:
        raise ValueError(f"invalid size `{shown}`: it must be at least one byte")
    return size


def format_duration(seconds: float) -> str:
    """Format seconds the way users write them, e.g. ``5400`` → ``"1h30m"``.

    Parameters
    ----------
    seconds
        A positive, finite number of seconds.

    Returns
    -------
    str
        A string that :func:`parse_duration` reads back as the same value (fractions of a second
        are kept to the millisecond).
    """
    millis = round(seconds * 1000)
    parts = []
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        count, millis = divmod(millis, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"


def format_size(size_bytes: int) -> str:
    """Format bytes with the largest binary unit that divides them, e.g. ``2147483648`` → ``"2g"``.

    Parameters
    ----------
    size_bytes
        A positive number of bytes.

    Returns
    -------
    str
        A string that :func:`parse_size` reads back as exactly ``size_bytes``.
    """
    for unit in ("t", "g", "m", "k"):
        shift = _SIZE_SHIFT[unit]
        if size_bytes >= 1 << shift and size_bytes % (1 << shift) == 0:
            return f"{size_bytes >> shift}{unit}"
    return str(size_bytes)
