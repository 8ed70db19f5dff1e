"""The scheduler's public surface: what the HTTP API layer imports."""

from __future__ import annotations

import dataclasses

import kiln.scheduler as scheduler


def test_all_is_sorted_and_importable() -> None:
    assert scheduler.__all__ == sorted(scheduler.__all__)
    for name in scheduler.__all__:
        assert getattr(scheduler, name) is not None


def test_everything_handed_out_is_a_frozen_dataclass() -> None:
    for name in (
        "AttemptView",
        "Heartbeat",
        "JobView",
        "LeasedJob",
        "LogChunk",
        "LogLine",
        "LogPage",
        "ReclaimedAttempt",
        "RunContext",
        "RunSummary",
        "RunView",
        "StepView",
    ):
        cls = getattr(scheduler, name)
        assert dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen, name


def test_the_methods_the_api_calls_exist() -> None:
    for method in (
        "submit_run",
        "lease_next",
        "heartbeat",
        "append_logs",
        "step_started",
        "step_finished",
        "report_image",
        "complete_attempt",
        "reclaim_expired_leases",
        "cancel_run",
        "get_run",
        "list_runs",
        "get_logs",
    ):
        assert callable(getattr(scheduler.Scheduler, method)), method
