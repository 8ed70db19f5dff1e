from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kiln.spec import format_duration, format_size, parse_duration, parse_size


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90.0),
        ("10m", 600.0),
        ("1h30m", 5400.0),
        ("2h", 7200.0),
        ("1d", 86400.0),
        ("1.5h", 5400.0),
        ("500ms", 0.5),
        ("1h 30m", 5400.0),
        ("45", 45.0),
        (45, 45.0),
        (2.5, 2.5),
    ],
)
def test_parse_duration_reads_units_and_plain_seconds(text: str | int | float, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text", ["", "abc", "10x", "m", "1h-30m", "-5m", "10 minutes", "0", "0s", 0, -1, -0.5, math.nan, math.inf]
)
def test_parse_duration_rejects_garbage_zero_and_negative(text: str | int | float) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


@pytest.mark.parametrize("value", [True, None, [1]])
def test_parse_duration_rejects_other_types(value: object) -> None:
    with pytest.raises(TypeError):
        parse_duration(value)  # type: ignore[arg-type]


@given(st.integers(0, 48), st.integers(0, 59), st.integers(0, 59))
def test_parse_duration_adds_up_its_parts(hours: int, minutes: int, seconds: int) -> None:
    total = hours * 3600 + minutes * 60 + seconds
    text = f"{hours}h{minutes}m{seconds}s"
    if total == 0:
        with pytest.raises(ValueError):
            parse_duration(text)
    else:
        assert parse_duration(text) == total


@given(st.integers(1, 10**9))
def test_format_duration_round_trips_through_parse(millis: int) -> None:
    assert parse_duration(format_duration(millis / 1000)) == pytest.approx(millis / 1000)


def test_format_duration_writes_what_users_write() -> None:
    assert format_duration(5400) == "1h30m"


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("256m", 256 << 20),
        ("2g", 2 << 30),
        ("512Mi", 512 << 20),
        ("1GiB", 1 << 30),
        ("2GB", 2 << 30),
        ("1024k", 1 << 20),
        ("1t", 1 << 40),
        ("100b", 100),
        ("1.5g", 3 << 29),
        ("1048576", 1 << 20),
        (1048576, 1 << 20),
    ],
)
def test_parse_size_uses_binary_units(text: str | int, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "g", "2x", "2 gigs", "-1g", "0", "0m", "1.5", 0, -1])
def test_parse_size_rejects_garbage_zero_and_negative(text: str | int) -> None:
    with pytest.raises(ValueError, match="invalid size"):
        parse_size(text)


@pytest.mark.parametrize("value", [True, 1.5, None])
def test_parse_size_rejects_other_types(value: object) -> None:
    with pytest.raises(TypeError):
        parse_size(value)  # type: ignore[arg-type]


@given(st.integers(1, 10**6), st.sampled_from([("k", 10), ("m", 20), ("g", 30), ("Mi", 20), ("GiB", 30)]))
def test_parse_size_multiplies_by_the_unit(number: int, unit: tuple[str, int]) -> None:
    suffix, shift = unit
    assert parse_size(f"{number}{suffix}") == number << shift


@given(st.integers(1, 1 << 50))
def test_format_size_round_trips_through_parse(size: int) -> None:
    assert parse_size(format_size(size)) == size


def test_format_size_picks_the_largest_exact_unit() -> None:
    assert (format_size(2 << 30), format_size(1536), format_size(1000)) == ("2g", "1536", "1000")
