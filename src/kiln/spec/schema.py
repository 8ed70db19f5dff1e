"""The JSON Schema of the workflow YAML, for editors (yaml-language-server) and external tools."""

from __future__ import annotations

from typing import Any

from kiln.spec.models import Workflow

__all__ = ["workflow_json_schema"]

_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def workflow_json_schema() -> dict[str, Any]:
    """Return the JSON Schema (draft 2020-12) of the workflow file as users write it.

    Returns
    -------
    dict[str, Any]
        The schema of the input form: YAML keys (``timeout``, ``limits.memory``), durations and
        sizes as strings (``"10m"``, ``"2g"``) or plain numbers, env values as strings, numbers
        or booleans. ``images`` (custom images: bases, steps) and ``artifacts`` are described in
        full. The schema checks shape, not cross-references (``needs`` order, a job's image, an
        image's base naming another image, cycles): :func:`kiln.spec.parse_workflow` does.
    """
    schema = Workflow.model_json_schema(mode="validation", by_alias=True)
    return {
        "$schema": _DIALECT,
        **schema,
        "title": "kiln workflow",
        "description": "A kiln workflow file: jobs run one after another, each in a fresh sandbox.",
    }
