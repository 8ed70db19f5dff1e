"""The workflow as frozen pydantic models: one class per level of the YAML.

Each model reads two forms of the same data:

- the YAML form users write: ``timeout: 10m``, ``limits: {memory: 2g}``;
- its own ``model_dump(mode="json")``: ``timeout_s: 600.0``, ``limits: {memory_bytes: 2147483648}``.
  The control plane stores jobs in this form and the runner validates them again, so both
  must pass. Field names are the normalized ones, aliases are the YAML keys, and the models
  accept either (``validate_by_name`` and ``validate_by_alias``). :func:`kiln.spec.parse_workflow`
  turns the field names off for YAML (``by_name=False``): users write ``timeout``, and
  ``timeout_s`` in a workflow file is an unknown key with a hint.

Validators raise ``ValueError`` (or ``PydanticCustomError`` where the error needs its own type);
pydantic adds the location, and :mod:`kiln.spec.problems` turns it into file:line:col.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from kiln.spec.artifacts import Artifact, duplicate_artifact_problems
from kiln.spec.caches import Cache, duplicate_cache_problems
from kiln.spec.images import Image, ImageName
from kiln.spec.loader import format_loc
from kiln.spec.references import reference_problems
from kiln.spec.scalars import check_env_name, scalar_text
from kiln.spec.units import DURATION_PATTERN, SIZE_PATTERN, parse_duration, parse_size

__all__ = ["Job", "Limits", "Step", "Workflow", "default_step_name"]

#: Top-level keys with this prefix are ignored: they hold YAML anchors.
EXTENSION_PREFIX = "x-"
#: Error type of the workflow-wide reference check, which parse_workflow reports on its own.
REFERENCES_ERROR = "kiln_references"
#: Error type of a known key whose feature a later kiln version implements.
NOT_SUPPORTED_ERROR = "kiln_not_supported"

_ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
_JOB_NAME_PATTERN = r"^[A-Za-z0-9_-]+$"
_STEP_NAME_MAX = 60


def _env_name(name: str) -> str:
    return check_env_name(name)


def _job_name(name: str) -> str:
    if not re.fullmatch(_JOB_NAME_PATTERN, name):
        raise ValueError(f"`{name}` is not a valid job name (letters, digits, `-` and `_`)")
    return name


def _env_value(value: object) -> object:
    if value is None:
        raise ValueError('the value is empty; write `""` for an empty string')
    return scalar_text(value)  # a string passes; anything else fails the str check with pydantic's message


def _duration(value: object) -> object:
    if value is None or isinstance(value, bool) or not isinstance(value, str | int | float):
        return value  # let the float check report the type
    return parse_duration(value)


def _size(value: object) -> object:
    # YAML reads `1e9` as a float; a whole number of bytes is still a size.
    if isinstance(value, float) and not isinstance(value, bool) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, str | int):
        return value  # let the int check report the type
    return parse_size(value)


def _one_or_more(value: object) -> object:
    # `needs: lint` reads naturally and GitHub Actions accepts it; it means `needs: [lint]`.
    return [value] if isinstance(value, str) else value


def _non_blank(text: str) -> str:
    if not text.strip():
        raise ValueError("must not be empty")
    return text


EnvName = Annotated[
    str, AfterValidator(_env_name), WithJsonSchema({"type": "string", "pattern": _ENV_NAME_PATTERN})
]
_JOB_NAME_SCHEMA = {"type": "string", "pattern": _JOB_NAME_PATTERN}
JobName = Annotated[str, AfterValidator(_job_name), WithJsonSchema(_JOB_NAME_SCHEMA)]
EnvValue = Annotated[
    str,
    BeforeValidator(_env_value),
    WithJsonSchema({"type": ["string", "number", "boolean"]}, mode="validation"),
]
Env = Annotated[
    dict[EnvName, EnvValue],
    # pydantic turns the key pattern into patternProperties; without this, other keys would pass.
    Field(json_schema_extra={"additionalProperties": False}),
]
Duration = Annotated[
    float,
    BeforeValidator(_duration),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": DURATION_PATTERN},
                {"type": "number", "exclusiveMinimum": 0},
            ],
            "description": "Seconds, or a duration such as `90s`, `10m`, `1h30m`.",
        },
        mode="validation",
    ),
]
Size = Annotated[
    int,
    BeforeValidator(_size),
    WithJsonSchema(
        {
            "anyOf": [{"type": "string", "pattern": SIZE_PATTERN}, {"type": "integer", "minimum": 1}],
            "description": "Bytes, or a size with a binary unit such as `256m`, `2g`, `512Mi`.",
        },
        mode="validation",
    ),
]
# A key the format reserves for a later kiln version: present in the models (so typos get a hint
# and the schema documents it), refused whenever it is used, never serialized.
NotYetSupported = Annotated[
    None,
    WithJsonSchema({"not": {}, "description": "Not supported yet by this kiln version."}, mode="validation"),
]


def _refuse_not_yet_supported(value: object, info: ValidationInfo) -> None:
    raise PydanticCustomError(
        NOT_SUPPORTED_ERROR,
        "`{key}:` is not supported yet by this kiln version",
        {"key": info.field_name},
    )


def _drop_default(schema: dict[str, Any]) -> None:
    # The "" default is a placeholder that _name_from_run always replaces; don't publish it.
    schema.pop("default", None)


def default_step_name(run: str) -> str:
    """Return the name of a step that has none: the first non-empty line of its command.

    Parameters
    ----------
    run
        The step's shell command.

    Returns
    -------
    str
        The line, stripped, shortened to 60 characters with a trailing ``…`` when longer.
    """
    line = next((line.strip() for line in run.splitlines() if line.strip()), "")
    return line if len(line) <= _STEP_NAME_MAX else line[: _STEP_NAME_MAX - 1].rstrip() + "…"


class _Model(BaseModel):
    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        validate_by_alias=True,
        validate_by_name=True,
    )


class Limits(_Model):
    """Resource limits of a job's sandbox, enforced through cgroups; an unset limit is no limit."""

    memory_bytes: Size | None = Field(
        None, alias="memory", description="Memory limit: bytes, or e.g. `512m`, `2g`."
    )
    pids: int | None = Field(None, gt=0, description="Maximum number of processes and threads.")
    # The sandbox's CFS quota needs at least 1% of a CPU (it refuses less, and infinity).
    cpus: float | None = Field(
        None, ge=0.01, allow_inf_nan=False, description="CPU bandwidth in CPUs: `1.5` is one and a half."
    )

    @field_validator("memory_bytes")
    @classmethod
    def _at_least_a_mebibyte(cls, value: int | None) -> int | None:
        # Nothing runs in less, and `memory: 512` almost always means 512 MiB, not bytes.
        if value is not None and value < 1 << 20:
            raise ValueError(
                f"{value} bytes is below the 1 MiB minimum; a number without a unit is bytes "
                f"(did you mean `{value}m`?)"
            )
        return value


class Step(_Model):
    """One shell command of a job."""

    name: str = Field(
        "",
        min_length=1,
        description="Shown in logs; defaults to the first line of `run`.",
        json_schema_extra=_drop_default,
    )
    run: Annotated[str, AfterValidator(_non_blank)] = Field(
        description="Shell command(s), run with `/bin/sh -e -c` in /workspace."
    )
    env: Env = Field(default_factory=dict, description="Environment of this step, over the job's.")
    network: bool | None = Field(
        None, description="Network access for this step; default: the job's `network`."
    )
    timeout_s: Duration | None = Field(
        None, alias="timeout", description="Wall-clock limit of this step; default: the job's."
    )

    @model_validator(mode="before")
    @classmethod
    def _name_from_run(cls, data: Any) -> Any:
        if isinstance(data, dict) and "name" not in data and isinstance(data.get("run"), str):
            name = default_step_name(data["run"])
            # A blank `run` has no name to give; its own error is enough.
            return {**data, "name": name} if name else data
        return data


class Job(_Model):
    """A list of steps run in one fresh sandbox; jobs run one after another, in file order."""

    image: str = Field(
        "host", min_length=1, description="`host` (default), `busybox`, or a name from `images:`."
    )
    network: bool = Field(False, description="Network access; default: none (loopback only).")
    timeout_s: Duration = Field(3600.0, alias="timeout", description="Wall-clock limit of the whole job.")
    limits: Limits = Field(default_factory=Limits)
    env: Env = Field(default_factory=dict, description="Environment of every step, over the workflow's.")
    needs: Annotated[
        list[JobName],
        BeforeValidator(_one_or_more),
        WithJsonSchema(
            {"anyOf": [_JOB_NAME_SCHEMA, {"type": "array", "items": _JOB_NAME_SCHEMA}]}, mode="validation"
        ),
    ] = Field(
        default_factory=list,
        description="Jobs, earlier in the file, whose artifacts this job gets before its first step.",
    )
    steps: list[Step] = Field(min_length=1)
    caches: list[Cache] = Field(
        default_factory=list,
        description="Caches restored before the first step and saved after the last (see `type`).",
    )
    artifacts: list[Artifact] = Field(
        default_factory=list,
        description="Outputs uploaded after the last step; jobs that `needs:` this one get them "
        "in their workspace before their first step.",
    )

    @field_validator("caches")
    @classmethod
    def _caches_are_independent(cls, caches: list[Cache]) -> list[Cache]:
        problems = duplicate_cache_problems(caches)
        if problems:
            raise ValueError("; ".join(problems))
        return caches

    @field_validator("artifacts")
    @classmethod
    def _artifact_names_are_unique(cls, artifacts: list[Artifact]) -> list[Artifact]:
        problems = duplicate_artifact_problems(artifacts)
        if problems:
            raise ValueError("; ".join(problems))
        return artifacts


class Workflow(_Model):
    """A workflow file: a name, an environment, and jobs in the order they run."""

    name: str = Field(min_length=1)
    env: Env = Field(default_factory=dict, description="Environment of every job.")
    jobs: dict[JobName, Job] = Field(
        min_length=1,
        description="Jobs, run one after another in file order.",
        json_schema_extra={"additionalProperties": False},
    )
    images: dict[ImageName, Image] = Field(
        default_factory=dict,
        description="Build environments: a base and steps, built into cached layers; jobs name one "
        "in `image:`.",
        json_schema_extra={"additionalProperties": False},
    )

    # Top-level `x-…` keys are free for YAML anchors (`x-defaults: &defaults {...}`), as in Docker
    # Compose: without such a place, anchors could only be defined inside a job.
    model_config = ConfigDict(json_schema_extra={"patternProperties": {f"^{EXTENSION_PREFIX}": {}}})

    @model_validator(mode="before")
    @classmethod
    def _drop_extensions(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if not str(k).startswith(EXTENSION_PREFIX)}
        return data

    @model_validator(mode="after")
    def _check_references(self) -> Workflow:
        # parse_workflow runs the same check on the raw YAML (so it is reported together with
        # every other problem, at the right line); this keeps the invariant for JSON input.
        found = reference_problems(
            {
                "images": {name: {"from": image.from_} for name, image in self.images.items()},
                "jobs": {name: {"image": job.image, "needs": job.needs} for name, job in self.jobs.items()},
            }
        )
        if found:
            summary = "; ".join(f"{format_loc(loc)}: {message}" for loc, message in found)
            raise PydanticCustomError(REFERENCES_ERROR, "{summary}", {"summary": summary})
        return self
