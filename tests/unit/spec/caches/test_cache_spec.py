"""The `caches:` of a job: shapes, normalised paths, and the rules each type imposes."""

from __future__ import annotations

import pytest

from kiln import sandbox
from kiln.spec import Job, parse_workflow
from kiln.spec.caches import SANDBOX_HOME, WORKSPACE, Cache, sandbox_path

from ..helpers import at, only_problem, problems_of

HEAD = "name: demo\njobs:\n  a:\n    steps: [{run: x}]\n    caches:\n"


def _caches(text: str) -> list[Cache]:
    return list(parse_workflow(HEAD + text).jobs["a"].caches)


def test_the_issue_example_is_valid_with_its_defaults() -> None:
    caches = _caches(
        "      - name: pip\n"
        "        type: deps\n"
        "        paths: [~/.cache/pip]\n"
        "        key:\n"
        "          files: [requirements*.txt]\n"
        "          env: [PIP_INDEX_URL]\n"
        '          values: ["v2"]\n'
        "        restore-keys: true\n"
        "        policy: pull-push\n"
        "        when: on-success\n"
        "        fail-on-error: false\n"
        "      - {name: ccache, type: compiler, paths: [.ccache]}\n"
        "      - name: objs\n"
        "        type: build\n"
        "        paths: [build/]\n"
        '        key: {files: ["src/**", Makefile]}\n'
    )
    pip, ccache, objs = caches
    assert (pip.key.files, pip.key.env, pip.key.values, pip.restore_keys) == (
        ["requirements*.txt"],
        ["PIP_INDEX_URL"],
        ["v2"],
        True,
    )
    assert (ccache.policy, ccache.when, ccache.fail_on_error, ccache.restore_keys) == (
        "pull-push",
        "on-success",
        False,
        False,
    )
    assert objs.paths == ["build"]


@pytest.mark.parametrize(
    ("written", "logical", "inside"),
    [
        ("~/.cache/pip", "~/.cache/pip", "/root/.cache/pip"),
        ("~/.cache//pip/", "~/.cache/pip", "/root/.cache/pip"),
        ("build/", "build", "/workspace/build"),
        ("./build", "build", "/workspace/build"),
        ("/opt/tool", "/opt/tool", "/opt/tool"),
        ("~", "~", "/root"),
    ],
)
def test_paths_keep_their_logical_form(written: str, logical: str, inside: str) -> None:
    (cache,) = _caches(f"      - {{name: c, type: deps, paths: ['{written}']}}\n")
    assert cache.paths == [logical]
    assert sandbox_path(logical) == inside


def test_the_spec_knows_the_sandbox_home_and_workspace() -> None:
    assert (SANDBOX_HOME, WORKSPACE) == (sandbox.SANDBOX_HOME, sandbox.WORKSPACE)


def test_a_single_string_is_a_list_of_one() -> None:
    (cache,) = _caches(
        "      - {name: c, type: deps, paths: x, key: {files: a.txt, env: HOME, values: 3.10}}\n"
    )
    assert (cache.paths, cache.key.files, cache.key.env, cache.key.values) == (
        ["x"],
        ["a.txt"],
        ["HOME"],
        ["3.10"],
    )


def test_restore_keys_on_a_build_cache_is_an_error_at_its_value() -> None:
    problem = only_problem(
        HEAD + "      - name: objs\n        type: build\n        paths: [build]\n"
        "        key: {files: [src/**]}\n        restore-keys: true\n"
    )
    assert at(problem) == (10, 23)
    assert problem.message.startswith(
        "jobs.a.caches[0].restore-keys: `restore-keys` is not allowed on a `build`"
    )


@pytest.mark.parametrize("kind", ["deps", "compiler"])
def test_restore_keys_is_fine_on_deps_and_compiler(kind: str) -> None:
    (cache,) = _caches(f"      - {{name: c, type: {kind}, paths: [x], restore-keys: true}}\n")
    assert cache.restore_keys


def test_a_build_cache_needs_key_files() -> None:
    problem = only_problem(HEAD + "      - name: objs\n        type: build\n        paths: [build]\n")
    assert at(problem) == (6, 9)
    assert "a `build` cache needs `key.files`" in problem.message


def test_duplicate_names_are_an_error_naming_both() -> None:
    problem = only_problem(
        HEAD + "      - {name: p, type: deps, paths: [a]}\n      - {name: p, type: deps, paths: [b]}\n"
    )
    assert problem.message == (
        "jobs.a.caches: cache name `p` is used twice (caches[0] and caches[1]); "
        "names must be unique within a job"
    )


def test_two_caches_may_not_share_a_folder() -> None:
    problem = only_problem(
        HEAD
        + "      - {name: p, type: deps, paths: [~/.cache]}\n"
        + "      - {name: q, type: deps, paths: [/root/.cache/pip]}\n"
    )
    assert "`/root/.cache/pip` of caches[1] overlaps `~/.cache` of caches[0]" in problem.message


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("../up", "`..` is not allowed in a cache path"),
        ("a/../../b", "`..` is not allowed in a cache path"),
        ("~bob/x", "only `~` (the job's HOME) is supported"),
        ("/", "the whole file system"),
        (".", "the whole workspace"),
        ("/workspace", "the whole workspace"),
        ("/tmp/x", "emptied after every step"),
        ("/proc/self", "a kernel or runtime file system"),
        ("''", "must not be empty"),
    ],
)
def test_refused_paths(path: str, message: str) -> None:
    problem = only_problem(HEAD + f"      - {{name: p, type: deps, paths: [{path}]}}\n")
    assert message in problem.message
    assert problem.message.startswith("jobs.a.caches[0].paths[0]:")


def test_nested_paths_in_one_cache_are_an_error() -> None:
    problem = only_problem(HEAD + "      - {name: p, type: deps, paths: [a, a/b]}\n")
    assert "`a/b` overlaps `a`" in problem.message


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("type", "dep", "`dep` is not one of `deps`, `compiler`, `build`; did you mean `deps`?"),
        ("policy", "pul", "did you mean `pull`?"),
        ("when", "later", "`later` is not one of `on-success`, `always`"),
        ("name", "'-x'", "is not a valid cache name"),
    ],
)
def test_bad_values_are_named(field: str, value: str, message: str) -> None:
    fields = {"name": "c", "type": "deps", "paths": "[x]", field: value}
    text = ", ".join(f"{k}: {v}" for k, v in fields.items())
    problem = only_problem(HEAD + f"      - {{{text}}}\n")
    assert message in problem.message


def test_key_patterns_are_relative_to_the_workspace() -> None:
    problems = problems_of(
        HEAD + "      - {name: c, type: deps, paths: [x], key: {files: [/etc/passwd, ../x]}}\n"
    )
    assert [p.message.split(": ", 1)[0] for p in problems] == [
        "jobs.a.caches[0].key.files[0]",
        "jobs.a.caches[0].key.files[1]",
    ]


def test_an_unknown_key_gets_a_hint() -> None:
    problem = only_problem(HEAD + "      - {name: c, type: deps, paths: [x], restore_keys: true}\n")
    assert problem.message.endswith("unknown key `restore_keys`; did you mean `restore-keys`?")


def test_the_json_form_validates_again_unchanged() -> None:
    job = parse_workflow(
        HEAD
        + "      - {name: c, type: compiler, paths: [.ccache], restore-keys: true, fail-on-error: true}\n"
    ).jobs["a"]
    dumped = job.model_dump(mode="json")
    assert dumped["caches"][0]["restore_keys"] is True
    assert Job.model_validate(dumped) == job
