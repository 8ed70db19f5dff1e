"""The `artifacts:` of a job: shapes, defaults, normalised globs, and located errors."""

from __future__ import annotations

import pytest

from kiln.spec import Job, parse_workflow
from kiln.spec.artifacts import DEFAULT_RETENTION_S, Artifact

from ..helpers import at, only_problem

HEAD = "name: demo\njobs:\n  a:\n    steps: [{run: x}]\n    artifacts:\n"


def _artifacts(text: str) -> list[Artifact]:
    return list(parse_workflow(HEAD + text).jobs["a"].artifacts)


def test_the_issue_example_is_valid() -> None:
    (dist,) = _artifacts(
        "      - name: dist\n"
        '        paths: ["dist/**"]\n'
        '        exclude: ["**/*.tmp"]\n'
        "        when: on-success\n"
        "        retention: 7d\n"
        "        if-no-files-found: error\n"
    )
    assert (dist.name, dist.paths, dist.exclude, dist.when, dist.retention_s, dist.if_no_files_found) == (
        "dist",
        ["dist/**"],
        ["**/*.tmp"],
        "on-success",
        7 * 86400.0,
        "error",
    )


def test_defaults_are_strict_and_keep_a_week() -> None:
    (out,) = _artifacts("      - {name: out, paths: out}\n")
    assert (out.paths, out.exclude, out.when, out.retention_s, out.if_no_files_found) == (
        ["out"],
        [],
        "on-success",
        DEFAULT_RETENTION_S,
        "error",
    )


@pytest.mark.parametrize(
    ("written", "normal"),
    [("dist/", "dist"), ("./dist/**", "dist/**"), (".", "**"), ("a//b", "a/b"), ("**/*.log", "**/*.log")],
)
def test_globs_are_normalised(written: str, normal: str) -> None:
    (art,) = _artifacts(f"      - {{name: x, paths: ['{written}']}}\n")
    assert art.paths == [normal]


def test_the_stored_form_validates_again_unchanged() -> None:
    job = parse_workflow(HEAD + "      - {name: x, paths: [a], retention: 12h, when: always}\n").jobs["a"]
    dumped = job.model_dump(mode="json")
    assert dumped["artifacts"][0]["retention_s"] == 43200.0
    assert Job.model_validate(dumped) == job


def test_two_declarations_of_one_name_are_a_located_error() -> None:
    problem = only_problem(HEAD + "      - {name: dist, paths: [a]}\n      - {name: dist, paths: [b]}\n")
    assert at(problem) == (6, 7)
    assert problem.message == (
        "jobs.a.artifacts: artifact name `dist` is declared twice (artifacts[0] and artifacts[1]); "
        "names must be unique within a job"
    )
    assert str(problem).startswith("kiln.yml:6:7: ")


def test_the_same_name_in_two_jobs_is_fine() -> None:
    text = (
        "name: demo\njobs:\n"
        "  a: {steps: [{run: x}], artifacts: [{name: out, paths: [a]}]}\n"
        "  b: {needs: a, steps: [{run: x}], artifacts: [{name: out, paths: [b]}]}\n"
    )
    workflow = parse_workflow(text)
    assert [j.artifacts[0].name for j in workflow.jobs.values()] == ["out", "out"]


@pytest.mark.parametrize(
    ("entry", "position", "message"),
    [
        (
            "{name: x, paths: [/etc/passwd]}",
            (6, 27),
            "jobs.a.artifacts[0].paths[0]: `/etc/passwd`: artifact paths are globs relative to the workspace",
        ),
        ("{name: x, paths: ['~/.ssh']}", (6, 27), "`~/.ssh`: artifact paths are globs relative"),
        ("{name: x, paths: [../up]}", (6, 27), "`../up`: `..` is not allowed in an artifact path"),
        ("{name: x, paths: []}", (6, 26), "jobs.a.artifacts[0].paths: must not be empty"),
        ("{name: x, paths: [a], exclude: ['/tmp']}", (6, 41), "artifact paths are globs relative"),
        ("{name: '-x', paths: [a]}", (6, 16), "`-x` is not a valid artifact name"),
        ("{name: x, paths: [a], when: on-sucess}", (6, 37), "`on-sucess` is not one of"),
        ("{name: x, paths: [a], retention: 0}", (6, 42), "must be longer than zero"),
        ("{name: x, paths: [a], retention: 1week}", (6, 42), "invalid duration `1week`"),
        ("{name: x, paths: [a], if-no-files-found: fail}", (6, 50), "`fail` is not one of `error`"),
        ("{name: x, path: [a]}", (6, 19), "unknown key `path`; did you mean `paths`?"),
    ],
)
def test_bad_declarations_are_located(entry: str, position: tuple[int, int], message: str) -> None:
    problem = only_problem(HEAD + f"      - {entry}\n")
    assert message in problem.message
    assert at(problem) == position


def test_a_misspelt_when_suggests_the_choice() -> None:
    problem = only_problem(HEAD + "      - {name: x, paths: [a], when: on-failur}\n")
    assert "did you mean `on-failure`?" in problem.message
