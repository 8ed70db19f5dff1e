from __future__ import annotations

from kiln.spec import Workflow
from kiln.spec.loader import YamlFloat
from kiln.spec.problems import describe, yaml_keys


def test_yaml_keys_of_the_top_level() -> None:
    assert yaml_keys(Workflow, ()) == ["name", "env", "jobs", "images"]


def test_yaml_keys_walk_through_job_names_and_step_indexes() -> None:
    assert yaml_keys(Workflow, ("jobs", "any-job", "steps", 3)) == [
        "name",
        "run",
        "env",
        "network",
        "timeout",
    ]


def test_yaml_keys_use_the_aliases() -> None:
    assert yaml_keys(Workflow, ("jobs", "x", "limits")) == ["memory", "pids", "cpus"]
    assert "timeout" in yaml_keys(Workflow, ("jobs", "x"))


def test_yaml_keys_of_something_that_is_no_mapping_are_empty() -> None:
    assert yaml_keys(Workflow, ("jobs", "x", "env")) == []
    assert yaml_keys(Workflow, ("nope",)) == []


def test_describe_names_values_in_yaml_terms() -> None:
    assert [describe(v) for v in (None, True, 3, YamlFloat(3.1, "3.10"), {}, [])] == [
        "an empty value",
        "`true`",
        "the number `3`",
        "the number `3.10`",
        "a mapping",
        "a list",
    ]


def test_describe_shortens_long_strings() -> None:
    assert describe("x" * 100) == f'the string "{"x" * 39}…"'
