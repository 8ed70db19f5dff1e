"""How a stopped step is described: sizes in messages, counter parsing, and which reason wins."""

from __future__ import annotations

import pytest

from kiln.sandbox import Limits, StepOutcome
from kiln.sandbox.base import format_size
from kiln.sandbox.cgroups import CgroupCounters, parse_flat_keyed
from kiln.sandbox.job import describe_kill


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1 KiB"),
        (64 << 20, "64 MiB"),
        (256 << 20, "256 MiB"),
        (1536 << 20, "1.5 GiB"),
        (100_000_000, "95.4 MiB"),
        (3 << 40, "3 TiB"),
        (5000 << 40, "5000 TiB"),
    ],
)
def test_format_size(size: int, text: str) -> None:
    assert format_size(size) == text


def test_parse_flat_keyed_reads_cgroup_event_files() -> None:
    oom_control = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n"
    assert parse_flat_keyed(oom_control) == {"oom_kill_disable": 0, "under_oom": 0, "oom_kill": 3}
    assert parse_flat_keyed("max 17\n") == {"max": 17}
    memory_events = "low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\noom_group_kill 0\n"
    assert parse_flat_keyed(memory_events)["oom_kill"] == 1
    assert parse_flat_keyed("garbage\nmax notanumber\n") == {}


ZERO = CgroupCounters(oom_kills=0, pids_max_hits=0)
LIMITS = Limits(memory_bytes=256 << 20, pids=64)


def describe(**kwargs: object) -> str | None:
    base: dict[str, object] = {
        "limits": LIMITS,
        "cancelled": False,
        "timeout_s": None,
        "timed_out": False,
        "before": ZERO,
        "after": ZERO,
    }
    base.update(kwargs)
    return describe_kill(**base)  # type: ignore[arg-type]


def test_nothing_happened() -> None:
    assert describe() is None


def test_each_reason() -> None:
    assert describe(cancelled=True) == "cancelled"
    assert describe(timed_out=True, timeout_s=2.0) == "timeout after 2 s"
    assert describe(timed_out=True, timeout_s=1.5) == "timeout after 1.5 s"
    assert describe(after=CgroupCounters(1, 0)) == "memory limit 256 MiB"
    assert describe(after=CgroupCounters(0, 5)) == "pids limit 64"


def test_only_increases_during_the_step_count() -> None:
    earlier = CgroupCounters(oom_kills=2, pids_max_hits=9)
    assert describe(before=earlier, after=earlier) is None


def test_kiln_reasons_win_over_limits() -> None:
    both = CgroupCounters(1, 1)
    assert describe(cancelled=True, timed_out=True, timeout_s=1.0, after=both) == "cancelled"
    assert describe(timed_out=True, timeout_s=1.0, after=both) == "timeout after 1 s"
    assert describe(after=both) == "memory limit 256 MiB"


def test_limit_hit_without_a_limit_set_still_says_so() -> None:
    assert describe(limits=Limits(), after=CgroupCounters(1, 0)) == "memory limit (none set)"


def test_outcome_ok_needs_exit_zero_and_no_kill() -> None:
    assert StepOutcome(0, None, None, False, 0.1).ok
    assert not StepOutcome(1, None, None, False, 0.1).ok
    assert not StepOutcome(0, None, "pids limit 64", False, 0.1).ok
    assert not StepOutcome(None, 9, "cancelled", False, 0.1).ok


@pytest.mark.parametrize(
    "kwargs",
    [{"memory_bytes": 1000}, {"pids": 0}, {"cpus": 0.0}, {"cpus": float("nan")}, {"cpus": float("inf")}],
)
def test_limits_refuse_nonsense(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        Limits(**kwargs)  # type: ignore[arg-type]
