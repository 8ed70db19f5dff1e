from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from kiln.spec import Job, Limits, Step, Workflow, parse_workflow
from kiln.spec.models import default_step_name

FULL = """\
name: demo
env: {LANG: C.UTF-8}
jobs:
  lint:
    image: busybox
    network: true
    timeout: 10m
    limits: {memory: 2g, pids: 512, cpus: 1.5}
    env: {PYTHONDONTWRITEBYTECODE: "1"}
    steps:
      - name: ruff
        run: ruff check .
        network: false
        timeout: 2m
  test:
    needs: [lint]
    steps:
      - run: pytest -q
"""


def test_job_defaults() -> None:
    job = Job.model_validate({"steps": [{"run": "true"}]})
    assert (job.image, job.network, job.timeout_s, job.env, job.needs) == ("host", False, 3600.0, {}, [])
    assert job.limits == Limits(memory_bytes=None, pids=None, cpus=None)


def test_yaml_keys_fill_the_normalized_fields() -> None:
    job = parse_workflow(FULL).jobs["lint"]
    assert (job.timeout_s, job.steps[0].timeout_s) == (600.0, 120.0)
    assert job.limits == Limits(memory_bytes=2 << 30, pids=512, cpus=1.5)


def test_a_step_without_network_or_timeout_inherits_them() -> None:
    step = parse_workflow(FULL).jobs["test"].steps[0]
    assert (step.network, step.timeout_s) == (None, None)


def test_jobs_keep_the_file_order() -> None:
    text = "name: x\njobs:\n" + "".join(f"  {n}:\n    steps: [{{run: 'true'}}]\n" for n in "zamb")
    assert list(parse_workflow(text).jobs) == ["z", "a", "m", "b"]


def test_job_round_trips_through_its_json() -> None:
    for job in parse_workflow(FULL).jobs.values():
        assert Job.model_validate(job.model_dump(mode="json")) == job


def test_workflow_round_trips_through_its_json() -> None:
    workflow = parse_workflow(FULL)
    dumped = workflow.model_dump(mode="json")
    assert dumped["jobs"]["lint"]["timeout_s"] == 600.0
    assert dumped["jobs"]["lint"]["limits"]["memory_bytes"] == 2 << 30
    assert Workflow.model_validate(dumped) == workflow
    assert Workflow.model_validate_json(workflow.model_dump_json()) == workflow


def test_the_json_by_alias_is_itself_a_valid_workflow_file() -> None:
    workflow = parse_workflow(FULL)
    dumped = workflow.model_dump(mode="json", by_alias=True)
    assert dumped["jobs"]["lint"]["timeout"] == 600.0
    assert Workflow.model_validate(dumped, by_alias=True, by_name=False) == workflow


def test_models_are_frozen() -> None:
    job = parse_workflow(FULL).jobs["lint"]
    with pytest.raises(ValidationError, match="frozen"):
        job.image = "host"  # type: ignore[misc]


def test_step_name_defaults_to_the_first_line_of_run() -> None:
    assert Step.model_validate({"run": "\n  make -j4 \nmake test\n"}).name == "make -j4"


def test_default_step_name_is_shortened() -> None:
    name = default_step_name("x" * 100)
    assert len(name) == 60 and name.endswith("…")


def test_env_numbers_and_booleans_become_strings_as_written() -> None:
    text = "name: x\nenv: {A: 1, B: true, C: 3.10, D: 0x1F, E: off}\njobs: {a: {steps: [{run: 'true'}]}}\n"
    assert parse_workflow(text).env == {"A": "1", "B": "true", "C": "3.10", "D": "0x1F", "E": "off"}


def test_env_numbers_from_json_become_strings() -> None:
    assert Step.model_validate({"run": "x", "env": {"A": 1, "B": False}}).env == {"A": "1", "B": "false"}


def test_an_empty_env_value_is_refused_with_a_hint() -> None:
    with pytest.raises(ValidationError, match='write `""` for an empty string'):
        Step.model_validate({"run": "x", "env": {"A": None}})


def test_needs_may_be_a_single_name() -> None:
    assert Job.model_validate({"needs": "lint", "steps": [{"run": "x"}]}).needs == ["lint"]


def test_a_tiny_memory_limit_suggests_a_unit() -> None:
    with pytest.raises(ValidationError, match=r"did you mean `512m`\?"):
        Limits.model_validate({"memory": 512})


def test_workflow_from_json_keeps_the_needs_order_invariant() -> None:
    data = {
        "name": "x",
        "jobs": {"a": {"needs": ["b"], "steps": [{"run": "x"}]}, "b": {"steps": [{"run": "x"}]}},
    }
    with pytest.raises(ValidationError, match="needs `b`, which runs after `a`"):
        Workflow.model_validate(data)


_NAMES = st.from_regex(r"[a-z][a-z0-9_-]{0,8}", fullmatch=True)
_ENV = st.dictionaries(
    st.from_regex(r"[A-Z_][A-Z0-9_]{0,6}", fullmatch=True), st.text(max_size=8), max_size=3
)
_DURATIONS = st.sampled_from(["90s", "10m", "1h30m", 45, 2.5, "500ms"])
_STEPS = st.fixed_dictionaries(
    {"run": st.text(min_size=1, max_size=30).filter(str.strip)},
    optional={
        "name": st.text(min_size=1, max_size=10),
        "env": _ENV,
        "network": st.booleans(),
        "timeout": _DURATIONS,
    },
)
_LIMITS = st.fixed_dictionaries(
    {},
    optional={
        "memory": st.sampled_from(["256m", "2g", "1GiB", 1 << 20]),
        "pids": st.integers(1, 10_000),
        "cpus": st.floats(0.01, 64),
    },
)
_JOBS = st.fixed_dictionaries(
    {"steps": st.lists(_STEPS, min_size=1, max_size=3)},
    optional={
        "image": st.sampled_from(["host", "busybox"]),
        "network": st.booleans(),
        "timeout": _DURATIONS,
        "limits": _LIMITS,
        "env": _ENV,
    },
)


@given(st.dictionaries(_NAMES, _JOBS, min_size=1, max_size=4), _ENV)
def test_any_valid_workflow_round_trips_through_json(
    jobs: dict[str, dict[str, object]], env: dict[str, str]
) -> None:
    names = list(jobs)
    # Each job needs the one before it, the only order kiln accepts.
    data = {
        "name": "w",
        "env": env,
        "jobs": {n: {**j, "needs": names[:i][-1:]} for i, (n, j) in enumerate(jobs.items())},
    }
    workflow = Workflow.model_validate(data, by_alias=True, by_name=False)
    assert Workflow.model_validate(workflow.model_dump(mode="json")) == workflow
    for job in workflow.jobs.values():
        assert Job.model_validate_json(job.model_dump_json()) == job
