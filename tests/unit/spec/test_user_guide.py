"""The workflows shown in docs/user-guide.md are valid, and its sample errors are real."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kiln.spec import parse_workflow

from .helpers import problems_of

GUIDE = Path(__file__).resolve().parents[3] / "docs" / "user-guide.md"
BLOCKS = re.findall(r"```(\w*)\n(.*?)```", GUIDE.read_text(), flags=re.DOTALL)
WORKFLOWS = [text for lang, text in BLOCKS if lang == "yaml" and re.search(r"^jobs:", text, re.MULTILINE)]


@pytest.mark.parametrize("text", WORKFLOWS, ids=lambda t: t.split("\n", 1)[0])
def test_every_workflow_in_the_guide_is_valid(text: str) -> None:
    assert parse_workflow(text).jobs


def test_the_guide_shows_workflows() -> None:
    assert len(WORKFLOWS) >= 2


def test_the_sample_errors_in_the_guide_are_what_kiln_prints() -> None:
    text = (
        "name: demo\n"
        "nmae: typo\n"
        "jobs:\n"
        "  lint:\n"
        "    timeout: soon\n"
        "    steps:\n"
        "      - run: ruff check .\n"
        "        netwrok: true\n"
        "  test:\n"
        "    image: host\n"
        "  deploy:\n"
        "    needs: [tset]\n"
        "    steps: [{run: ./deploy}]\n"
    )
    sample = next(body for lang, body in BLOCKS if lang == "" and body.startswith("kiln.yml:"))
    assert [str(p) for p in problems_of(text)] == sample.splitlines()
