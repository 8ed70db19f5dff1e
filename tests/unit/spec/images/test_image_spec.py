"""The `images:` section: bases, steps, references between images, and located errors."""

from __future__ import annotations

import pytest
from tests.unit.spec.helpers import at, only_problem, problems_of

from kiln.spec import Workflow, parse_workflow
from kiln.spec.images import image_chain, parse_base

HEAD = "name: demo\n"
JOB = "jobs:\n  a:\n    image: tc\n    steps: [{run: x}]\n"


def _images(body: str) -> str:
    return HEAD + "images:\n" + body + JOB


def test_a_full_image_parses_and_round_trips_through_json() -> None:
    text = _images(
        "  tc:\n"
        "    from: debian:bookworm\n"
        "    steps:\n"
        "      - apt: [gcc, make]\n"
        "      - run: pip install -r requirements.txt\n"
        "        network: true\n"
        "        inputs: requirements.txt\n"
        "        cache-mounts: [~/.cache/pip]\n"
        "        env: {PIP_NO_INPUT: 1}\n"
        "        shell: bash -e -c\n"
        "      - copy: {src: tools/, dst: /opt/tools}\n"
        '      - env: {PATH: "/opt/tools/bin:$PATH"}\n'
        "      - workdir: /workspace\n"
    )
    workflow = parse_workflow(text)
    steps = workflow.images["tc"].steps
    assert [s.kind for s in steps] == ["apt", "run", "copy", "env", "workdir"]
    assert steps[1].cache_mounts == ["/root/.cache/pip"]
    assert steps[1].argv_shell == ("bash", "-e", "-c")
    assert steps[1].env == {"PIP_NO_INPUT": "1"}
    assert steps[2].copy_ is not None and steps[2].copy_.src == "tools"
    assert Workflow.model_validate(workflow.model_dump(mode="json")) == workflow


@pytest.mark.parametrize(
    ("text", "kind", "fields"),
    [
        ("busybox", "busybox", {}),
        ("debian:bookworm", "debian", {"name": "bookworm"}),
        (
            "docker://127.0.0.1:5000/tools/cc:1",
            "docker",
            {"host": "127.0.0.1:5000", "name": "tools/cc", "tag": "1"},
        ),
        (
            "docker://registry.example.com/cc@sha256:" + "a" * 64,
            "docker",
            {"name": "cc", "tag": "", "digest": "sha256:" + "a" * 64},
        ),
        ("oci:vendor/layout:v2", "oci", {"path": "vendor/layout", "tag": "v2"}),
        ("oci-archive:vendor/img.tar", "oci-archive", {"path": "vendor/img.tar"}),
        ("toolchain", "image", {"name": "toolchain"}),
    ],
)
def test_base_forms(text: str, kind: str, fields: dict[str, str]) -> None:
    ref = parse_base(text)
    assert ref.kind == kind
    for name, value in fields.items():
        assert getattr(ref, name) == value


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("debian", "`debian` needs a suite: `debian:bookworm`"),
        ("host", "`host` cannot be a base"),
        ("ubuntu:22.04", "`ubuntu:22.04` is not a base kiln knows"),
        ("docker://localhost:5000/a/b", "needs a tag (`:1.2`) or a digest"),
        ("docker://cc:1", "the registry host comes first"),
        ("oci:/abs/path:1", "paths are relative to the repository"),
    ],
)
def test_bad_bases_are_located_at_the_from_value(value: str, message: str) -> None:
    problem = only_problem(_images(f'  tc:\n    from: "{value}"\n'))
    assert at(problem) == (4, 11)
    assert message in problem.message


def test_an_unknown_base_name_suggests_the_nearest_image() -> None:
    problem = only_problem(_images("  tc:\n    from: bse\n  base:\n    from: busybox\n"))
    assert (at(problem), problem.message) == (
        (4, 11),
        "images.tc.from: unknown base `bse`; did you mean `base`?",
    )


def test_a_misspelt_busybox_base_suggests_busybox() -> None:
    problem = only_problem(_images("  tc:\n    from: busybx\n"))
    assert problem.message == "images.tc.from: unknown base `busybx`; did you mean `busybox`?"


def test_images_building_on_each_other_in_a_cycle_are_refused() -> None:
    problem = only_problem(_images("  tc:\n    from: a\n  a:\n    from: tc\n"))
    assert "cycle: tc → a → tc" in problem.message


def test_a_job_on_an_unknown_image_gets_the_nearest_name() -> None:
    text = (
        HEAD
        + "images:\n  toolchain: {from: busybox}\njobs:\n  a:\n    image: toolchan\n    steps: [{run: x}]\n"
    )
    problem = only_problem(text)
    assert (at(problem), problem.message) == (
        (6, 12),
        "jobs.a.image: unknown image `toolchan`; did you mean `toolchain`?",
    )


@pytest.mark.parametrize(
    ("step", "message"),
    [
        ("{run: x, copy: {src: a, dst: /a}}", "`run` and `copy` belong in separate steps"),
        ("{network: true}", "a step needs one of `apt`, `run`, `copy`, `env`, `workdir`"),
        ("{workdir: /w, network: true}", "`network` only goes with `run`"),
        ("{apt: [gcc=12]}", "write the package name only"),
        ("{copy: {src: ../x, dst: /x}}", "`..` is not allowed"),
        ("{copy: {src: x, dst: opt}}", "must be an absolute path inside the image"),
        ("{run: x, cache-mounts: [/tmp/c]}", "cannot be a cache mount"),
    ],
)
def test_bad_steps_are_reported_with_their_reason(step: str, message: str) -> None:
    problems = problems_of(_images(f"  tc:\n    from: busybox\n    steps:\n      - {step}\n"))
    assert any(message in p.message for p in problems), [str(p) for p in problems]


def test_builtin_names_cannot_be_redefined() -> None:
    problem = only_problem(HEAD + "images:\n  busybox: {from: busybox}\n" + JOB.replace("tc", "busybox"))
    assert "`busybox` is a built-in image" in problem.message


def test_the_chain_lists_the_images_an_image_is_built_from_base_first() -> None:
    workflow = parse_workflow(
        _images("  tc:\n    from: mid\n  mid:\n    from: root\n  root:\n    from: busybox\n")
    )
    assert image_chain(workflow.images, "tc") == ["root", "mid", "tc"]


def test_the_json_schema_accepts_images_and_refuses_unknown_step_keys() -> None:
    import jsonschema

    from kiln.spec import workflow_json_schema
    from kiln.spec.loader import load_yaml

    validator = jsonschema.Draft202012Validator(workflow_json_schema())
    good = _images(
        "  tc:\n    from: busybox\n    steps:\n      - run: make\n        env: {CC: gcc}\n"
        "        cache-mounts: [~/.cache]\n      - env: {PATH: /x}\n"
    )
    assert validator.is_valid(load_yaml(good, "kiln.yml").data)
    bad = _images("  tc:\n    from: busybox\n    steps:\n      - run: make\n        netwrok: true\n")
    assert not validator.is_valid(load_yaml(bad, "kiln.yml").data)
