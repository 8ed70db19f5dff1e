"""The workflows in docs/reuse-across-jobs.md are valid, and say what the page says they do."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kiln.spec import parse_workflow

PAGE = Path(__file__).resolve().parents[4] / "docs" / "reuse-across-jobs.md"
WORKFLOWS = [
    body
    for lang, body in re.findall(r"```(\w*)\n(.*?)```", PAGE.read_text(), flags=re.DOTALL)
    if lang == "yaml"
]


@pytest.mark.parametrize("text", WORKFLOWS, ids=lambda t: t.split("\n", 1)[0])
def test_every_workflow_on_the_page_is_valid(text: str) -> None:
    assert parse_workflow(text).jobs


def test_the_toolchain_example_declares_the_same_caches_on_two_images() -> None:
    workflow = parse_workflow(next(text for text in WORKFLOWS if "images:" in text))
    gcc, clang = workflow.jobs["build-gcc"], workflow.jobs["build-clang"]
    assert gcc.image != clang.image and {gcc.image, clang.image} <= set(workflow.images)
    assert gcc.caches == clang.caches  # same names, types, paths and declared inputs
    assert workflow.jobs["compare"].needs == ["build-gcc", "build-clang"]
    outputs = [a.paths for job in (gcc, clang) for a in job.artifacts]
    assert outputs == [["app-gcc"], ["app-clang"]]
