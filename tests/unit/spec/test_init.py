from __future__ import annotations

import kiln.spec


def test_all_is_sorted_and_importable() -> None:
    assert kiln.spec.__all__ == sorted(kiln.spec.__all__)
    for name in kiln.spec.__all__:
        assert getattr(kiln.spec, name) is not None


def test_the_promised_names_are_exported() -> None:
    promised = {
        "load_workflow",
        "parse_workflow",
        "workflow_json_schema",
        "Workflow",
        "Job",
        "Step",
        "Limits",
    }
    assert promised | {"parse_duration", "parse_size"} <= set(kiln.spec.__all__)
