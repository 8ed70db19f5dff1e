from __future__ import annotations

import copy

import pytest

from kiln.errors import WorkflowInvalid
from kiln.spec.loader import Mark, YamlFloat, YamlInt, format_loc, load_yaml


def test_records_one_based_positions_of_keys_and_values() -> None:
    doc = load_yaml("name: demo\njobs:\n  lint:\n    image: host\n", "f.yml")
    assert doc.keys[("jobs", "lint", "image")] == Mark(4, 5)
    assert doc.values[("jobs", "lint", "image")] == Mark(4, 12)
    assert doc.values[("jobs", "lint")] == Mark(4, 5)


def test_records_positions_of_sequence_items() -> None:
    doc = load_yaml("steps:\n  - run: a\n  - run: b\n", "f.yml")
    assert doc.values[("steps", 1)] == Mark(3, 5)
    assert doc.values[("steps", 1, "run")] == Mark(3, 10)


def test_an_empty_value_is_located_at_its_key() -> None:
    # The scanner puts an empty value's mark on the next line; users look at the key.
    doc = load_yaml("jobs:\n  lint:\nname: x\n", "f.yml")
    assert doc.data == {"jobs": {"lint": None}, "name": "x"}
    assert doc.values[("jobs", "lint")] == Mark(2, 3)


def test_mark_falls_back_to_the_nearest_existing_ancestor() -> None:
    doc = load_yaml("jobs:\n  lint:\n    image: host\n", "f.yml")
    assert doc.mark(("jobs", "lint", "steps", 0, "run")) == Mark(3, 5)


def test_reports_every_duplicate_key_at_the_repeated_one_and_keeps_the_first() -> None:
    doc = load_yaml("a: 1\nb: 2\na: 3\nb: 4\n", "f.yml")
    assert doc.data == {"a": 1, "b": 2}
    assert [(p.line, p.column, p.message) for p in doc.problems] == [
        (3, 1, "duplicate key `a` (first defined at line 1, column 1)"),
        (4, 1, "duplicate key `b` (first defined at line 2, column 1)"),
    ]


def test_keys_are_always_their_text() -> None:
    assert load_yaml("2024: x\ntrue: y\n1.5: z\n", "f.yml").data == {"2024": "x", "true": "y", "1.5": "z"}


def test_numbers_remember_how_they_were_written() -> None:
    data = load_yaml("a: 3.10\nb: 0x1F\n", "f.yml").data
    assert isinstance(data["a"], YamlFloat) and (data["a"], data["a"].text) == (3.1, "3.10")
    assert isinstance(data["b"], YamlInt) and (data["b"], data["b"].text) == (31, "0x1F")


def test_reads_yaml_1_2_so_yes_and_no_are_strings() -> None:
    assert load_yaml("a: yes\nb: off\nc: true\n", "f.yml").data == {"a": "yes", "b": "off", "c": True}


def test_dates_stay_text() -> None:
    assert load_yaml("a: 2024-01-01\n", "f.yml").data == {"a": "2024-01-01"}


def test_merge_keys_apply_and_explicit_keys_win() -> None:
    text = "base: &b {image: busybox, timeout: 5m}\njob:\n  timeout: 1m\n  <<: *b\n"
    doc = load_yaml(text, "f.yml")
    assert doc.data["job"] == {"image": "busybox", "timeout": "1m"}
    assert doc.values[("job", "timeout")] == Mark(3, 12)
    assert doc.values[("job",)] == Mark(3, 3)


def test_an_alias_to_its_own_ancestor_is_a_problem() -> None:
    doc = load_yaml("a: &x\n  b: *x\n", "f.yml")
    assert [p.message for p in doc.problems] == ["an alias refers to itself"]


def test_unsupported_tags_are_problems() -> None:
    doc = load_yaml("a: !!binary aGk=\nb: !custom x\n", "f.yml")
    assert [p.message for p in doc.problems] == [
        "unsupported YAML tag `!!binary`",
        "unsupported YAML tag `!custom`",
    ]


def test_a_syntax_error_is_the_only_problem_with_its_position() -> None:
    with pytest.raises(WorkflowInvalid) as caught:
        load_yaml("name: x\njobs: [a, b\n", "f.yml")
    (problem,) = caught.value.problems
    assert (problem.file, problem.line, problem.column) == ("f.yml", 3, 1)
    assert problem.message.startswith("invalid YAML: expected ',' or ']'")


def test_a_tab_in_the_indentation_is_a_syntax_error() -> None:
    with pytest.raises(WorkflowInvalid) as caught:
        load_yaml("jobs:\n\tlint: {}\n", "f.yml")
    assert (caught.value.problems[0].line, caught.value.problems[0].column) == (2, 1)


def test_several_documents_are_refused() -> None:
    with pytest.raises(WorkflowInvalid, match="expected a single document"):
        load_yaml("a: 1\n---\nb: 2\n", "f.yml")


def test_an_exponential_alias_bomb_is_refused() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 8)]
    with pytest.raises(WorkflowInvalid, match="too large"):
        load_yaml("\n".join(lines), "f.yml")


def test_an_empty_document_has_no_data() -> None:
    assert load_yaml("# only a comment\n", "f.yml").data is None


def test_format_loc_reads_like_a_path() -> None:
    assert format_loc(("jobs", "lint", "steps", 2, "run")) == "jobs.lint.steps[2].run"


def test_a_mapping_that_merges_itself_is_a_problem_not_a_crash() -> None:
    doc = load_yaml("a: &x\n  b: 1\n  <<: *x\n", "f.yml")
    assert doc.data == {"a": {"b": 1}}
    assert [p.message for p in doc.problems] == ["an alias refers to itself"]


def test_numbers_keep_their_text_through_a_deep_copy() -> None:
    data = copy.deepcopy(load_yaml("a: 3.10\nb: 0x1F\n", "f.yml").data)
    assert (data["a"].text, data["b"].text) == ("3.10", "0x1F")
