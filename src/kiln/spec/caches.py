"""The ``caches:`` of a job: what to keep between runs, keyed on what may change it.

Three types with three contracts (ARCHITECTURE.md §1):

- ``deps``: package-manager stores (``~/.cache/pip``); the package manager re-verifies what it
  takes, so an approximate restore (``restore-keys: true``) is safe.
- ``compiler``: per-object compiler caches (ccache); each object is keyed by ccache itself, so an
  approximate restore is safe too.
- ``build``: build trees trusted by mtime (``build/``); a stale tree silently corrupts a build, so
  only an exact key restores, the key must name the build's inputs, and ``restore-keys`` is an error.

Paths are written the way users think of them: ``~/…`` is the sandbox HOME, a relative path is under
the workspace, an absolute one is inside the sandbox. :attr:`Cache.paths` keeps that *logical* form
(it is part of the key; a host path never is); :func:`sandbox_path` resolves it.

Pure: no I/O, and no kiln imports except the spec's own loader for number texts.
"""

from __future__ import annotations

import posixpath
import re
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)

from kiln.spec.references import nearest
from kiln.spec.scalars import check_env_name, scalar_text

__all__ = [
    "CACHE_TYPES",
    "SANDBOX_HOME",
    "WORKSPACE",
    "Cache",
    "CacheKey",
    "duplicate_cache_problems",
    "sandbox_path",
]

CacheType = Literal["deps", "compiler", "build"]
CACHE_TYPES: tuple[str, ...] = ("deps", "compiler", "build")

#: The job's HOME and workspace inside the sandbox (kiln.sandbox defines them; the spec may not
#: import it, and a test keeps the two equal).
SANDBOX_HOME = "/root"
WORKSPACE = "/workspace"

_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"
# Sandbox paths a cache may not hold: the whole system, the whole workspace (the sources
# themselves), kernel file systems, and /tmp, a tmpfs that is gone after every step.
_REFUSED_EXACT = ("/", WORKSPACE)
_REFUSED_TREES = ("/proc", "/sys", "/dev", "/tmp", "/run")


def sandbox_path(logical: str) -> str:
    """Resolve a logical cache path (``~/.cache/pip``, ``build``, ``/opt/x``) inside the sandbox.

    Parameters
    ----------
    logical
        A path as :class:`Cache` normalised it.

    Returns
    -------
    str
        The absolute path inside the sandbox: ``/root/.cache/pip``, ``/workspace/build``, ``/opt/x``.
    """
    if logical == "~":
        return SANDBOX_HOME
    if logical.startswith("~/"):
        return posixpath.normpath(posixpath.join(SANDBOX_HOME, logical[2:]))
    if logical.startswith("/"):
        return logical
    return posixpath.normpath(posixpath.join(WORKSPACE, logical))


def _logical_path(text: str) -> str:
    path = text.strip()
    if not path:
        raise ValueError("a cache path must not be empty")
    if "\0" in path:
        raise ValueError("a cache path must not contain a NUL character")
    if path.startswith("~") and not (path == "~" or path.startswith("~/")):
        raise ValueError(f"`{text}`: only `~` (the job's HOME) is supported, not `~user`")
    if ".." in path.split("/"):
        raise ValueError(f"`{text}`: `..` is not allowed in a cache path")
    if path.startswith("~"):
        rest = posixpath.normpath(path[1:].lstrip("/") or ".")
        normal = "~" if rest == "." else f"~/{rest}"
    else:
        normal = posixpath.normpath(path)
        if normal.startswith("//"):  # POSIX keeps a leading `//`; it means `/` here
            normal = "/" + normal.lstrip("/")
    inside = sandbox_path(normal)
    if inside in _REFUSED_EXACT or any(inside == t or inside.startswith(t + "/") for t in _REFUSED_TREES):
        raise ValueError(f"`{text}` cannot be cached: it is {_why_refused(inside)}")
    return normal


def _why_refused(inside: str) -> str:
    if inside == "/":
        return "the whole file system"
    if inside == WORKSPACE:
        return "the whole workspace (cache a folder inside it, e.g. `build/`)"
    if inside == "/tmp" or inside.startswith("/tmp/"):
        return "under /tmp, which is emptied after every step"
    return "a kernel or runtime file system"


def _glob(text: str) -> str:
    pattern = text.strip()
    if not pattern:
        raise ValueError("a key file pattern must not be empty")
    if pattern.startswith(("/", "~")):
        raise ValueError(f"`{text}`: key files are globs relative to the workspace, not absolute paths")
    if ".." in pattern.split("/"):
        raise ValueError(f"`{text}`: `..` is not allowed in a key file pattern")
    return pattern


def _one_of(*choices: str) -> BeforeValidator:
    """A check that names the choices (and the likely one) instead of pydantic's literal message."""

    def check(value: object) -> object:
        if isinstance(value, str) and value not in choices:
            guess = nearest(value, list(choices))
            hint = f"; did you mean `{guess}`?" if guess else ""
            shown = ", ".join(f"`{c}`" for c in choices)
            raise ValueError(f"`{value}` is not one of {shown}{hint}")
        return value

    return BeforeValidator(check)


def _one_or_more(value: object) -> object:
    return [value] if isinstance(value, str) else value


def _one_scalar_or_more(value: object) -> object:
    return [value] if isinstance(value, str | int | float) else value


def _cache_name(name: str) -> str:
    if not re.fullmatch(_NAME_PATTERN, name):
        raise ValueError(
            f"`{name}` is not a valid cache name (letters, digits, `.`, `-` and `_`, "
            "starting with a letter or digit, at most 100 characters)"
        )
    return name


_STRINGS = WithJsonSchema(
    {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}, mode="validation"
)
_SCALAR = {"type": ["string", "number", "boolean"]}
_SCALARS = WithJsonSchema({"anyOf": [_SCALAR, {"type": "array", "items": _SCALAR}]}, mode="validation")
LogicalPath = Annotated[str, AfterValidator(_logical_path)]
KeyGlob = Annotated[str, AfterValidator(_glob)]
KeyEnvName = Annotated[str, AfterValidator(check_env_name)]
KeyValue = Annotated[str, BeforeValidator(scalar_text)]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", validate_by_alias=True, validate_by_name=True)


class CacheKey(_Model):
    """What the user says pins a cache's content; kiln adds the image, platform, type and paths."""

    files: Annotated[list[KeyGlob], BeforeValidator(_one_or_more), _STRINGS] = Field(
        default_factory=list,
        description="Globs in the workspace (`**` crosses folders); the files' contents are hashed, "
        "not their mtimes.",
    )
    env: Annotated[list[KeyEnvName], BeforeValidator(_one_or_more), _STRINGS] = Field(
        default_factory=list,
        description="Environment variable names; their values in the job are hashed.",
    )
    values: Annotated[list[KeyValue], BeforeValidator(_one_scalar_or_more), _SCALARS] = Field(
        default_factory=list,
        description="Literal strings, e.g. a manual bump `v2`.",
    )


class Cache(_Model):
    """One cache of a job: restored before its first step, saved after its last."""

    name: Annotated[str, AfterValidator(_cache_name)] = Field(
        description="Unique within the job; entries are found by name and key."
    )
    type: Annotated[CacheType, _one_of(*CACHE_TYPES)] = Field(
        description="`deps` (package stores), `compiler` (ccache) or `build` (build trees: exact keys only)."
    )
    paths: Annotated[list[LogicalPath], BeforeValidator(_one_or_more), _STRINGS] = Field(
        min_length=1,
        description="Folders to keep: `~/…` is the HOME, relative paths are in the workspace.",
    )
    key: CacheKey = Field(
        default_factory=CacheKey,
        validate_default=True,
        description="The declared inputs of the key (required for `build`: the inputs of the build).",
    )
    restore_keys: bool = Field(
        False,
        alias="restore-keys",
        description="On a miss, restore the newest entry of the same name, image and paths "
        "(`deps` and `compiler` only).",
    )
    policy: Annotated[Literal["pull", "push", "pull-push"], _one_of("pull", "push", "pull-push")] = Field(
        "pull-push", description="`pull`: restore only; `push`: save only; `pull-push`: both."
    )
    when: Annotated[Literal["on-success", "always"], _one_of("on-success", "always")] = Field(
        "on-success", description="Save after a successful job only, or also after a failed one."
    )
    fail_on_error: bool = Field(
        False,
        alias="fail-on-error",
        description="A restore or save error fails the job (default: a warning).",
    )

    @field_validator("paths")
    @classmethod
    def _paths_do_not_overlap(cls, paths: list[str]) -> list[str]:
        inside = [sandbox_path(p) for p in paths]
        for i, a in enumerate(inside):
            for j, b in enumerate(inside[:i]):
                if a == b or a.startswith(b + "/") or b.startswith(a + "/"):
                    raise ValueError(
                        f"`{paths[i]}` overlaps `{paths[j]}`; list each folder once, without its parents"
                    )
        return paths

    @field_validator("key")
    @classmethod
    def _build_key_names_its_inputs(cls, key: CacheKey, info: ValidationInfo) -> CacheKey:
        # A build tree is trusted by mtime: restoring it for other inputs corrupts the build.
        if info.data.get("type") == "build" and not key.files:
            raise ValueError(
                "a `build` cache needs `key.files`: the inputs of the build "
                '(e.g. `key: {files: ["src/**", Makefile]}`), so that a different source never '
                "restores a stale build tree"
            )
        return key

    @field_validator("restore_keys")
    @classmethod
    def _no_fallback_for_build(cls, restore_keys: bool, info: ValidationInfo) -> bool:
        if restore_keys and info.data.get("type") == "build":
            raise ValueError(
                "`restore-keys` is not allowed on a `build` cache: a build tree restored for other "
                "inputs is stale and would silently corrupt the build; only `deps` and `compiler` "
                "caches may fall back"
            )
        return restore_keys


def duplicate_cache_problems(caches: list[Cache]) -> list[str]:
    """Messages for cache names or folders used twice within one job.

    Parameters
    ----------
    caches
        The job's caches, in file order.

    Returns
    -------
    list[str]
        One message per problem (empty when the caches are independent).
    """
    problems: list[str] = []
    first_name: dict[str, int] = {}
    owner: list[tuple[str, int, str]] = []  # (sandbox path, cache index, logical path)
    for index, cache in enumerate(caches):
        if cache.name in first_name:
            problems.append(
                f"cache name `{cache.name}` is used twice (caches[{first_name[cache.name]}] and "
                f"caches[{index}]); names must be unique within a job"
            )
        first_name.setdefault(cache.name, index)
        for logical in cache.paths:
            inside = sandbox_path(logical)
            for other, other_index, other_logical in owner:
                if other_index != index and (
                    inside == other or inside.startswith(other + "/") or other.startswith(inside + "/")
                ):
                    problems.append(
                        f"`{logical}` of caches[{index}] overlaps `{other_logical}` of "
                        f"caches[{other_index}]; a folder belongs to one cache"
                    )
            owner.append((inside, index, logical))
    return problems
