"""The ``artifacts:`` of a job: outputs that later jobs *require* (ARCHITECTURE.md §1, §8).

Unlike a cache, an artifact is not optional: a job that ``needs:`` the producer gets exactly what
was uploaded, verified, or fails naming the artifact. So the declaration is strict:

- ``paths`` and ``exclude`` are globs relative to the workspace (``dist/**``, ``**/*.tmp``); an
  artifact is extracted into the same place in the jobs that need it, so an absolute path, ``~`` or
  ``..`` would have no meaning there and is refused;
- ``when`` says after which outcome of the job it is uploaded; ``retention`` how long it stays;
- ``if-no-files-found`` says whether an empty match fails the job (default) or not.

Names are unique within a job (an artifact is identified by run, job and name).

Pure: no I/O, and no kiln imports except the spec's own helpers.
"""

from __future__ import annotations

import posixpath
import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema

from kiln.spec.caches import _one_of
from kiln.spec.units import DURATION_PATTERN, parse_duration

__all__ = ["DEFAULT_RETENTION_S", "Artifact", "duplicate_artifact_problems"]

#: How long an artifact stays when ``retention`` is not given: a week, long enough to rerun or
#: inspect a run, short enough that forgotten outputs do not pile up.
DEFAULT_RETENTION_S = 7 * 86400.0

_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"


def _artifact_name(name: str) -> str:
    if not re.fullmatch(_NAME_PATTERN, name):
        raise ValueError(
            f"`{name}` is not a valid artifact name (letters, digits, `.`, `-` and `_`, "
            "starting with a letter or digit, at most 100 characters)"
        )
    return name


def _workspace_glob(text: str) -> str:
    pattern = text.strip()
    if not pattern:
        raise ValueError("an artifact path must not be empty")
    if "\0" in pattern:
        raise ValueError("an artifact path must not contain a NUL character")
    if pattern.startswith(("/", "~")):
        raise ValueError(
            f"`{text}`: artifact paths are globs relative to the workspace (the jobs that need the "
            "artifact get it at the same place), not absolute paths"
        )
    if ".." in pattern.split("/"):
        raise ValueError(f"`{text}`: `..` is not allowed in an artifact path")
    normal = posixpath.normpath(pattern)
    return "**" if normal == "." else normal


def _one_or_more(value: object) -> object:
    return [value] if isinstance(value, str) else value


def _duration(value: object) -> object:
    if value is None or isinstance(value, bool) or not isinstance(value, str | int | float):
        return value  # let the float check report the type
    return parse_duration(value)


_STRINGS = WithJsonSchema(
    {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}, mode="validation"
)
WorkspaceGlob = Annotated[str, AfterValidator(_workspace_glob)]
# The same forms as a job's `timeout` (kiln.spec.models.Duration, which this module cannot import:
# models imports it), with its own description.
_RETENTION_FORMS = [
    {"type": "string", "pattern": DURATION_PATTERN},
    {"type": "number", "exclusiveMinimum": 0},
]
Retention = Annotated[
    float,
    BeforeValidator(_duration),
    WithJsonSchema(
        {"anyOf": _RETENTION_FORMS, "description": "Seconds, or e.g. `12h`, `7d`."}, mode="validation"
    ),
]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", validate_by_alias=True, validate_by_name=True)


class Artifact(_Model):
    """One named output of a job, uploaded after its steps for the jobs that ``needs:`` it."""

    name: Annotated[str, AfterValidator(_artifact_name)] = Field(
        description="Unique within the job; `kiln artifacts download RUN NAME` finds it by this name."
    )
    paths: Annotated[list[WorkspaceGlob], BeforeValidator(_one_or_more), _STRINGS] = Field(
        min_length=1,
        description="Globs relative to the workspace (`**` crosses folders); a matched folder is "
        "taken whole. File modes, symbolic links and empty folders are kept.",
    )
    exclude: Annotated[list[WorkspaceGlob], BeforeValidator(_one_or_more), _STRINGS] = Field(
        default_factory=list, description="Globs of files and folders to leave out."
    )
    when: Annotated[
        Literal["on-success", "on-failure", "always"], _one_of("on-success", "on-failure", "always")
    ] = Field("on-success", description="Upload after a successful job, a failed one, or either.")
    retention_s: Retention = Field(
        DEFAULT_RETENTION_S,
        alias="retention",
        description="How long the artifact is kept (default `7d`); then it expires and is deleted.",
    )
    if_no_files_found: Annotated[Literal["error", "warn", "ignore"], _one_of("error", "warn", "ignore")] = (
        Field(
            "error",
            alias="if-no-files-found",
            description="When nothing matches: fail the job (`error`), or upload nothing with a "
            "warning (`warn`) or silently (`ignore`); jobs that need it then fail.",
        )
    )


def duplicate_artifact_problems(artifacts: list[Artifact]) -> list[str]:
    """Messages for artifact names declared twice within one job.

    Parameters
    ----------
    artifacts
        The job's artifacts, in file order.

    Returns
    -------
    list[str]
        One message per repeated declaration (empty when every name is unique).
    """
    problems: list[str] = []
    first: dict[str, int] = {}
    for index, artifact in enumerate(artifacts):
        if artifact.name in first:
            problems.append(
                f"artifact name `{artifact.name}` is declared twice (artifacts[{first[artifact.name]}] "
                f"and artifacts[{index}]); names must be unique within a job"
            )
        first.setdefault(artifact.name, index)
    return problems
