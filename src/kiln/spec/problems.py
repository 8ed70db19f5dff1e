"""pydantic validation errors → :class:`kiln.errors.SpecProblem`, at the YAML line and column.

pydantic gives every error a ``loc`` (the path of the value, using the YAML keys because we
validate by alias), a machine ``type`` and an English ``msg``. We keep the loc, find the node it
points at in the :class:`~kiln.spec.loader.Document`, and rewrite the message in the YAML's own
terms ("expected a list, got the string ..."). Where the error is about a key rather than a value
(unknown key, unsupported key, invalid name), it points at the key.
"""

from __future__ import annotations

import types
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from kiln.errors import SpecProblem
from kiln.spec.loader import Document, Loc, YamlFloat, YamlInt, format_loc
from kiln.spec.models import EXTENSION_PREFIX, NOT_SUPPORTED_ERROR, REFERENCES_ERROR
from kiln.spec.references import nearest

__all__ = ["describe", "validation_problems", "yaml_keys"]

# pydantic error type → what the YAML should have held there.
_EXPECTED = {
    "string_type": "a string",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "list_type": "a list",
}


def validation_problems(error: ValidationError, doc: Document, model: type[BaseModel]) -> list[SpecProblem]:
    """Turn every error of a validation of ``doc.data`` against ``model`` into a located problem.

    Parameters
    ----------
    error
        What ``model.model_validate(doc.data, by_alias=True, by_name=False)`` raised.
    doc
        The document that was validated, with its positions.
    model
        The root model, used to suggest the nearest valid key for an unknown one.

    Returns
    -------
    list[SpecProblem]
        One problem per error, in pydantic's order. The workflow-wide reference error is left
        out: :func:`kiln.spec.parse_workflow` reports those problems one by one on its own.
    """
    details = [d for d in error.errors(include_url=False) if d["type"] != REFERENCES_ERROR]
    # `stpes:` yields both "unknown key `stpes`; did you mean `steps`?" and "missing `steps`";
    # the first says it all, so drop the second.
    hinted = {
        (*d["loc"][:-1], guess)
        for d in details
        if d["type"] == "extra_forbidden"
        and (guess := nearest(str(d["loc"][-1]), yaml_keys(model, tuple(d["loc"][:-1]))))
    }
    return [
        _problem(d, doc, model) for d in details if not (d["type"] == "missing" and tuple(d["loc"]) in hinted)
    ]


def _problem(detail: ErrorDetails, doc: Document, model: type[BaseModel]) -> SpecProblem:
    loc: Loc = tuple(detail["loc"])
    kind = detail["type"]
    if loc and loc[-1] == "[key]":  # a mapping key failed validation (a job or env var name)
        loc = loc[:-1]
        mark, where, message = doc.mark(loc, key=True), loc[:-1], _message(detail, loc)
    elif kind == "extra_forbidden":
        mark, where, message = doc.mark(loc, key=True), loc[:-1], _unknown_key(loc, model)
    elif kind == "missing":
        # The key is not in the file, so point at the mapping that should hold it.
        mark, where, message = doc.mark(loc[:-1]), loc[:-1], f"missing required key `{loc[-1]}`"
    elif kind == NOT_SUPPORTED_ERROR:
        mark, where, message = doc.mark(loc, key=True), loc[:-1], detail["msg"]
    else:
        mark, where, message = doc.mark(loc), loc, _message(detail, loc)
    shown = format_loc(where)
    return doc.problem(loc, mark, f"{shown}: {message}" if shown else message)


def _message(detail: ErrorDetails, loc: Loc) -> str:
    kind, ctx, value = detail["type"], detail.get("ctx", {}), detail["input"]
    if not loc and kind in ("model_type", "dict_type"):
        return f"the top level must be a mapping with `name` and `jobs`, got {describe(value)}"
    if kind in _EXPECTED:
        message = f"expected {_EXPECTED[kind]}, got {describe(value)}"
        if kind == "model_type" and isinstance(value, str) and loc[-2:-1] == ("steps",):
            message += f"; a step is a mapping: `- run: {value}`"  # the GitLab `script:` habit
        return message
    if kind in ("too_short", "string_too_short"):
        least = ctx.get("min_length", 1)
        return "must not be empty" if least == 1 else f"must have at least {least} entries"
    if kind == "greater_than":
        return f"must be greater than {ctx['gt']}, got {describe(value)}"
    if kind == "greater_than_equal":
        return f"must be at least {ctx['ge']}, got {describe(value)}"
    if kind == "finite_number":
        return f"must be a finite number, got {describe(value)}"
    if kind in ("value_error", "assertion_error") and "error" in ctx:
        return str(ctx["error"])
    return detail["msg"]


def _unknown_key(loc: Loc, model: type[BaseModel]) -> str:
    key = str(loc[-1])
    keys = yaml_keys(model, loc[:-1])
    guess = nearest(key, keys)
    if guess:
        return f"unknown key `{key}`; did you mean `{guess}`?"
    message = f"unknown key `{key}`"
    if keys:
        message += "; expected one of " + ", ".join(f"`{k}`" for k in keys)
    if not loc[:-1]:
        message += f" (top-level keys starting with `{EXTENSION_PREFIX}` are free for YAML anchors)"
    return message


def describe(value: object) -> str:
    """Name a YAML value for a message: ``the string "x"``, ``a list``, ``an empty value``."""
    if value is None:
        return "an empty value"
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, YamlInt | YamlFloat):
        return f"the number `{value.text}`"
    if isinstance(value, int | float):
        return f"the number `{value}`"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:39] + "…"
        return f'the string "{shown}"'
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


def yaml_keys(model: type[BaseModel], loc: Loc) -> list[str]:
    """Return the keys the YAML accepts in the mapping at ``loc``, or ``[]`` if it is no model.

    Parameters
    ----------
    model
        The root model.
    loc
        A path from the root, e.g. ``("jobs", "lint")`` (dict keys and list indexes are skipped
        through the type annotations, so any job name or step index works).

    Returns
    -------
    list[str]
        The YAML keys (aliases where there are any), in declaration order.
    """
    current: Any = model
    for part in loc:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            fields = {info.alias or name: info for name, info in current.model_fields.items()}
            if part not in fields:
                return []
            current = fields[part].annotation
        elif get_origin(current) is dict:
            current = get_args(current)[1]
        elif get_origin(current) is list:
            current = get_args(current)[0]
        else:
            return []
    current = _unwrap(current)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return [info.alias or name for name, info in current.model_fields.items()]
    return []


def _unwrap(annotation: Any) -> Any:
    """Strip ``Annotated[...]`` and ``X | None`` down to ``X``."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            others = [arg for arg in get_args(annotation) if arg is not type(None)]
            if len(others) != 1:
                return annotation
            annotation = others[0]
        else:
            return annotation
