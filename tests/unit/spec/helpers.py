"""Helpers shared by the spec tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from kiln.errors import SpecProblem, WorkflowInvalid
from kiln.spec import parse_workflow

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
EXAMPLE_FILES = sorted(EXAMPLES.rglob("*.yml"))


def problems_of(text: str) -> list[SpecProblem]:
    """Parse ``text`` expecting it to be invalid; return its problems."""
    with pytest.raises(WorkflowInvalid) as caught:
        parse_workflow(text)
    return caught.value.problems


def only_problem(text: str) -> SpecProblem:
    """Parse ``text`` expecting exactly one problem; return it."""
    problems = problems_of(text)
    assert len(problems) == 1, [str(p) for p in problems]
    return problems[0]


def at(problem: SpecProblem) -> tuple[int, int]:
    return problem.line, problem.column
