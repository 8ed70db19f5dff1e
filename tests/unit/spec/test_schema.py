from __future__ import annotations

from pathlib import Path

import pytest

jsonschema = pytest.importorskip("jsonschema", reason="jsonschema is a dev dependency")

from kiln.spec import parse_workflow, workflow_json_schema  # noqa: E402
from kiln.spec.loader import load_yaml  # noqa: E402

from .helpers import EXAMPLE_FILES  # noqa: E402

VALID = {"name": "x", "jobs": {"a": {"steps": [{"run": "true"}]}}}


def _validator() -> jsonschema.Draft202012Validator:
    schema = workflow_json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _with_job(**job: object) -> dict[str, object]:
    return {"name": "x", "jobs": {"a": {"steps": [{"run": "true"}], **job}}}


def test_the_schema_is_a_valid_draft_2020_12_schema() -> None:
    assert workflow_json_schema()["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(workflow_json_schema())


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: p.name)
def test_every_example_matches_the_schema(path: Path) -> None:
    data = load_yaml(path.read_text(), str(path)).data
    _validator().validate(data)


def test_the_yaml_form_of_a_dump_matches_the_schema() -> None:
    text = "name: x\njobs:\n  a:\n    timeout: 10m\n    limits: {memory: 2g}\n    steps: [{run: 'true'}]\n"
    _validator().validate(parse_workflow(text).model_dump(mode="json", by_alias=True))


@pytest.mark.parametrize(
    "document",
    [
        {**VALID, "stpes": []},
        _with_job(stpes=[]),
        _with_job(timeout="10x"),
        _with_job(timeout=0),
        _with_job(limits={"memory": "2 gigs"}),
        _with_job(env={"1FOO": "x"}),
        _with_job(caches=[{"name": "x", "type": "cargo", "paths": ["a"]}]),
        {**VALID, "images": {"tools": {"steps": []}}},
        {**VALID, "jobs": {}},
        {**VALID, "jobs": {"bad name": {"steps": [{"run": "x"}]}}},
        _with_job(steps=[]),
        {"jobs": VALID["jobs"]},
    ],
    ids=lambda d: str(d)[:60],
)
def test_invalid_documents_fail_the_schema(document: dict[str, object]) -> None:
    assert not _validator().is_valid(document)


def test_x_keys_for_anchors_pass_the_schema() -> None:
    assert _validator().is_valid({**VALID, "x-defaults": {"image": "busybox"}})
