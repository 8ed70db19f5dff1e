"""The run context on the wire and on the command line: a fork's pull request must be numbered."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from pydantic import ValidationError

from kiln.api.contexts import context_in, run_context
from kiln.api.models import RunContextIn
from kiln.cli.context import context_from_options

OPTIONS = {
    "tenant": "local",
    "repo": "web",
    "ref": "patch-1",
    "default_branch": "main",
    "event": "pull_request",
    "base_ref": "main",
    "fork": True,
    "pull_request": 12,
}


def test_a_fork_without_its_pull_request_number_is_refused_by_the_api() -> None:
    with pytest.raises(ValidationError, match="needs its number"):
        RunContextIn(repo="web", ref="patch-1", event="pull_request", is_fork=True)
    with pytest.raises(ValidationError):
        RunContextIn(repo="web", event="pull_request", pull_request=0)


def test_the_context_survives_the_round_trip_through_the_wire() -> None:
    wire = RunContextIn(repo="web", ref="patch-1", event="pull_request", is_fork=True, pull_request=12)
    ctx = run_context(wire)
    assert (ctx.is_fork, ctx.pull_request, ctx.trust_tier.value) == (True, 12, "fork_pull_request")
    assert context_in(ctx) == wire


def test_the_cli_names_the_missing_number_and_the_misplaced_one(tmp_path: Path) -> None:
    assert context_from_options(tmp_path, OPTIONS).pull_request == 12
    with pytest.raises(click.BadParameter, match="--pr N"):
        context_from_options(tmp_path, {**OPTIONS, "pull_request": None})
    with pytest.raises(click.BadParameter, match="--pr only makes sense"):
        context_from_options(tmp_path, {**OPTIONS, "event": "push", "fork": False, "base_ref": None})
