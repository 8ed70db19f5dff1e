from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kiln.errors import SpecProblem, UsageError, WorkflowInvalid
from kiln.spec import load_workflow, parse_workflow

from .helpers import EXAMPLE_FILES, at, only_problem, problems_of

# Line numbers below count from 1 at "name: demo"; columns from 1.
HEAD = "name: demo\njobs:\n"


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: str(p.relative_to(p.parents[1])))
def test_every_example_is_valid(path: Path) -> None:
    assert load_workflow(path).jobs


def test_the_examples_are_there() -> None:
    names = {p.name for p in EXAMPLE_FILES}
    assert {"hello.yml", "limits.yml", "kiln.yml"} <= names


def test_a_minimal_workflow_is_valid() -> None:
    workflow = parse_workflow(HEAD + "  a:\n    steps:\n      - run: echo hi\n")
    assert workflow.jobs["a"].steps[0].run == "echo hi"


def test_problems_print_as_file_line_column_message() -> None:
    with pytest.raises(WorkflowInvalid) as caught:
        parse_workflow(HEAD + "  a:\n    stpes: []\n", "ci/kiln.yml")
    assert str(caught.value) == "ci/kiln.yml:4:5: jobs.a: unknown key `stpes`; did you mean `steps`?"
    assert caught.value.exit_code == 2


def test_a_typo_gets_the_nearest_key_and_no_missing_key_error() -> None:
    problem = only_problem(HEAD + "  a:\n    stpes:\n      - run: x\n")
    assert (at(problem), problem.loc) == ((4, 5), ("jobs", "a", "stpes"))
    assert problem.message == "jobs.a: unknown key `stpes`; did you mean `steps`?"


def test_an_unknown_key_with_no_near_match_lists_the_valid_ones() -> None:
    problem = only_problem(HEAD + "  a:\n    steps: [{run: x}]\n    zzz: 1\n")
    assert at(problem) == (5, 5)
    assert problem.message.startswith("jobs.a: unknown key `zzz`; expected one of `image`, `network`")


def test_an_unknown_top_level_key_mentions_x_keys_for_anchors() -> None:
    problem = only_problem("name: demo\ndefaults: &d {}\njobs: {a: {steps: [{run: x}]}}\n")
    assert at(problem) == (2, 1)
    assert "keys starting with `x-` are free for YAML anchors" in problem.message


def test_x_keys_hold_anchors() -> None:
    text = "name: demo\nx-base: &base\n  image: busybox\njobs:\n  a:\n    <<: *base\n    steps: [{run: x}]\n"
    assert parse_workflow(text).jobs["a"].image == "busybox"


def test_normalized_field_names_are_unknown_keys_in_yaml() -> None:
    problem = only_problem(HEAD + "  a:\n    timeout_s: 60\n    steps: [{run: x}]\n")
    assert (at(problem), problem.message) == (
        (4, 5),
        "jobs.a: unknown key `timeout_s`; did you mean `timeout`?",
    )


def test_a_missing_key_points_at_the_mapping_that_lacks_it() -> None:
    problem = only_problem(HEAD + "  a:\n    image: host\n")
    assert (at(problem), problem.loc) == ((4, 5), ("jobs", "a", "steps"))
    assert problem.message == "jobs.a: missing required key `steps`"


def test_a_missing_top_level_key_points_at_the_top() -> None:
    problem = only_problem("# ci\nname: demo\n")
    assert (at(problem), problem.message) == ((2, 1), "missing required key `jobs`")


def test_a_wrong_type_points_at_the_value() -> None:
    problem = only_problem(HEAD + "  a:\n    network: maybe\n    steps: [{run: x}]\n")
    assert (at(problem), problem.loc) == ((4, 14), ("jobs", "a", "network"))
    assert problem.message == 'jobs.a.network: expected true or false, got the string "maybe"'


def test_a_mapping_where_a_list_belongs() -> None:
    problem = only_problem(HEAD + "  a:\n    steps:\n      run: x\n")
    assert (at(problem), problem.message) == ((5, 7), "jobs.a.steps: expected a list, got a mapping")


def test_empty_steps() -> None:
    problem = only_problem(HEAD + "  a:\n    steps: []\n")
    assert (at(problem), problem.message) == ((4, 12), "jobs.a.steps: must not be empty")


def test_steps_with_no_value_point_at_the_key() -> None:
    problem = only_problem(HEAD + "  a:\n    steps:\n")
    assert (at(problem), problem.message) == ((4, 5), "jobs.a.steps: expected a list, got an empty value")


def test_no_jobs() -> None:
    problem = only_problem("name: demo\njobs: {}\n")
    assert (at(problem), problem.message) == ((2, 7), "jobs: must not be empty")


def test_a_blank_run() -> None:
    problem = only_problem(HEAD + "  a:\n    steps:\n      - run: '  '\n")
    assert (at(problem), problem.message) == ((5, 14), "jobs.a.steps[0].run: must not be empty")


def test_a_bad_duration() -> None:
    problem = only_problem(HEAD + "  a:\n    timeout: 10x\n    steps: [{run: x}]\n")
    assert at(problem) == (4, 14)
    assert problem.message.startswith("jobs.a.timeout: invalid duration `10x`: use seconds or units like")


def test_a_zero_step_timeout() -> None:
    problem = only_problem(HEAD + "  a:\n    steps:\n      - run: x\n        timeout: 0s\n")
    assert (at(problem), problem.message) == (
        (6, 18),
        "jobs.a.steps[0].timeout: invalid duration `0s`: it must be longer than zero",
    )


def test_a_bad_size() -> None:
    problem = only_problem(HEAD + "  a:\n    limits:\n      memory: 2 gigs\n    steps: [{run: x}]\n")
    assert at(problem) == (5, 15)
    assert problem.message.startswith("jobs.a.limits.memory: invalid size `2 gigs`")


def test_a_negative_pid_limit() -> None:
    problem = only_problem(HEAD + "  a:\n    limits: {pids: -1}\n    steps: [{run: x}]\n")
    assert (at(problem), problem.message) == (
        (4, 20),
        "jobs.a.limits.pids: must be greater than 0, got the number `-1`",
    )


def test_an_invalid_job_name_points_at_the_name() -> None:
    problem = only_problem(HEAD + "  a:\n    steps: [{run: x}]\n  build it:\n    steps: [{run: x}]\n")
    assert (at(problem), problem.loc) == ((5, 3), ("jobs", "build it"))
    assert problem.message == "jobs: `build it` is not a valid job name (letters, digits, `-` and `_`)"


def test_an_invalid_env_name_points_at_the_name() -> None:
    problem = only_problem(HEAD + "  a:\n    env:\n      MY-VAR: x\n    steps: [{run: x}]\n")
    assert at(problem) == (5, 7)
    assert problem.message.startswith("jobs.a.env: `MY-VAR` is not a valid environment variable name")


def test_needs_a_later_job() -> None:
    problem = only_problem(
        HEAD + "  lint:\n    needs: [test]\n    steps: [{run: x}]\n  test:\n    steps: [{run: x}]\n"
    )
    assert (at(problem), problem.loc) == ((4, 13), ("jobs", "lint", "needs", 0))
    assert problem.message.startswith("jobs.lint.needs[0]: needs `test`, which runs after `lint`")


def test_needs_an_unknown_job() -> None:
    problem = only_problem(
        HEAD + "  test:\n    steps: [{run: x}]\n  ship:\n    needs:\n      - tset\n    steps: [{run: x}]\n"
    )
    assert at(problem) == (7, 9)
    assert problem.message == "jobs.ship.needs[0]: needs unknown job `tset`; did you mean `test`?"


def test_needs_order_is_reported_with_other_problems() -> None:
    text = (
        HEAD
        + "  lint:\n    needs: [test]\n    network: maybe\n    steps: [{run: x}]\n  test:\n    steps: []\n"
    )
    assert [at(p) for p in problems_of(text)] == [(4, 13), (5, 14), (8, 12)]


def test_an_unknown_image() -> None:
    problem = only_problem(HEAD + "  a:\n    image: debian\n    steps: [{run: x}]\n")
    assert at(problem) == (4, 12)
    assert problem.message.startswith("jobs.a.image: unknown image `debian`; the built-in images are")


def test_a_duplicate_key_points_at_the_second_one() -> None:
    problem = only_problem(HEAD + "  a:\n    steps: [{run: x}]\n    image: host\n    image: busybox\n")
    assert (at(problem), problem.loc) == ((6, 5), ("jobs", "a", "image"))
    assert problem.message == "duplicate key `image` (first defined at line 5, column 5)"


def test_a_duplicate_job_is_an_error() -> None:
    problem = only_problem(HEAD + "  a:\n    steps: [{run: x}]\n  a:\n    steps: [{run: y}]\n")
    assert (at(problem), problem.message) == ((5, 3), "duplicate key `a` (first defined at line 3, column 3)")


def test_a_syntax_error_has_its_line_and_column() -> None:
    problem = only_problem("name: demo\njobs:\n  a: b: c\n")
    assert (at(problem), problem.message) == ((3, 7), "invalid YAML: mapping values are not allowed here")


@pytest.mark.parametrize("text", ["", "\n", "# nothing\n", "---\n", "~\n"])
def test_an_empty_file(text: str) -> None:
    problem = only_problem(text)
    assert (at(problem), problem.message) == (
        (1, 1),
        "the workflow is empty; it needs at least `name` and `jobs`",
    )


@pytest.mark.parametrize(("text", "got"), [("- a\n- b\n", "a list"), ("# c\nhello\n", 'the string "hello"')])
def test_a_top_level_that_is_no_mapping(text: str, got: str) -> None:
    problem = only_problem(text)
    assert problem.message == f"the top level must be a mapping with `name` and `jobs`, got {got}"


def test_several_problems_are_reported_at_once_in_file_order() -> None:
    text = (
        "name: demo\n"  # 1
        "nmae: typo\n"  # 2
        "jobs:\n"  # 3
        "  lint:\n"  # 4
        "    timeout: soon\n"  # 5
        "    steps:\n"  # 6
        "      - run: ruff check .\n"  # 7
        "        netwrok: true\n"  # 8
        "  test:\n"  # 9
        "    image: host\n"  # 10
    )
    problems = problems_of(text)
    assert [(p.line, p.column, p.message.split(":")[0]) for p in problems] == [
        (2, 1, "unknown key `nmae`; did you mean `name`?"),
        (5, 14, "jobs.lint.timeout"),
        (8, 9, "jobs.lint.steps[0]"),
        (10, 5, "jobs.test"),
    ]


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("name: demo\njobs:\n  \ud800: {steps: [{run: x}]}\n", (3, 3)),
        ("name: \ud800\n", (1, 7)),
        ("name: demo\r\njobs:\r\n  a: {steps: [{run: \udfff}]}\r\n", (3, 21)),
        ("# \udc80\n", (1, 3)),
    ],
)
def test_a_raw_lone_surrogate_is_located(text: str, where: tuple[int, int]) -> None:
    problem = only_problem(text)
    assert at(problem) == where
    assert "is a lone surrogate, not a character" in problem.message


@pytest.mark.parametrize(
    ("data", "loc"),
    [
        ({"name": "d", "jobs": {"\ud800": {"steps": [{"run": "x"}]}}}, ("jobs", "\ufffd")),
        (
            {"name": "d", "env": {"A\udc00": "1"}, "jobs": {"a": {"steps": [{"run": "x"}]}}},
            ("env", "A\ufffd"),
        ),
        (
            {"name": "d", "images": {"\udbff\ud800": {"from": "busybox"}}, "jobs": {}},
            ("images", "\ufffd\ufffd"),
        ),
        ({"name": "\ud800", "jobs": {"a": {"steps": [{"run": "echo \ud83d"}]}}}, ("name",)),
    ],
)
def test_a_lone_surrogate_escape_is_a_located_problem_never_an_encoding_crash(
    data: object, loc: tuple
) -> None:
    """``"\\ud800"`` is valid YAML but no character: pydantic used to crash encoding it."""
    problems = problems_of(json.dumps(data))
    surrogate = [p for p in problems if "lone surrogate escape" in p.message]
    assert surrogate and surrogate[0].loc == loc and surrogate[0].line == 1 and surrogate[0].column > 1
    for problem in problems:
        str(problem).encode()  # every message prints on a UTF-8 terminal


def test_load_workflow_reports_under_the_path(tmp_path: Path) -> None:
    path = tmp_path / "kiln.yml"
    path.write_text("name: demo\njobs: {}\n")
    with pytest.raises(WorkflowInvalid) as caught:
        load_workflow(path)
    assert caught.value.problems[0].file == str(path)


def test_load_workflow_accepts_a_byte_order_mark(tmp_path: Path) -> None:
    path = tmp_path / "kiln.yml"
    path.write_bytes(b"\xef\xbb\xbfname: demo\njobs: {a: {steps: [{run: x}]}}\n")
    assert load_workflow(str(path)).name == "demo"


def test_load_workflow_locates_bytes_that_are_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "kiln.yml"
    path.write_bytes(b"name: demo\njobs:\n  a: caf\xe9\n")
    problem = only_problem_of_file(path)
    assert (at(problem), problem.message) == ((3, 9), "the file is not UTF-8 text (byte 0xe9)")


def test_load_workflow_of_a_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="cannot read the workflow file") as caught:
        load_workflow(tmp_path / "nope.yml")
    assert not isinstance(caught.value, WorkflowInvalid)


def only_problem_of_file(path: Path) -> SpecProblem:
    with pytest.raises(WorkflowInvalid) as caught:
        load_workflow(path)
    (problem,) = caught.value.problems
    return problem


@pytest.mark.parametrize(
    ("cpus", "message"),
    [
        ("0.001", "must be at least 0.01, got the number `0.001`"),
        (".inf", "must be a finite number, got the number `.inf`"),
    ],
)
def test_cpus_the_sandbox_cannot_enforce(cpus: str, message: str) -> None:
    problem = only_problem(HEAD + f"  a:\n    limits: {{cpus: {cpus}}}\n    steps: [{{run: x}}]\n")
    assert (at(problem), problem.message) == ((4, 20), f"jobs.a.limits.cpus: {message}")


def test_a_step_written_as_a_bare_command_gets_a_hint() -> None:
    problem = only_problem(HEAD + "  a:\n    steps:\n      - make test\n")
    assert at(problem) == (5, 9)
    assert problem.message.endswith('got the string "make test"; a step is a mapping: `- run: make test`')


# Lone surrogates (`"\\ud800"` in JSON) are drawn on purpose: they are valid escapes, not characters.
_TEXT = st.text(max_size=10) | st.text(st.characters(min_codepoint=0xD7F0, max_codepoint=0xE010), max_size=4)
_SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | _TEXT
_KEYS = (
    st.sampled_from(["name", "jobs", "env", "steps", "run", "timeout", "limits", "memory", "needs", "a"])
    | st.sampled_from(["images", "caches", "artifacts"])
    | _TEXT
)
_DATA = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_KEYS, inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300)
@given(st.text(max_size=200))
def test_any_text_is_a_workflow_or_located_problems(text: str) -> None:
    try:
        parse_workflow(text)
    except WorkflowInvalid as exc:
        assert exc.problems and all(p.line >= 1 and p.column >= 1 for p in exc.problems)
        str(exc).encode()


@settings(max_examples=300)
@given(_DATA)
def test_any_document_shape_is_a_workflow_or_located_problems(data: object) -> None:
    text = json.dumps(data)  # JSON is YAML, and reaches deeper into the models than random text
    try:
        parse_workflow(text)
    except WorkflowInvalid as exc:
        assert exc.problems and all(p.line >= 1 and p.column >= 1 for p in exc.problems)
        str(exc).encode()
