"""The top-level ``images:``: build environments declared as a base plus steps (ARCHITECTURE.md §7).

::

    images:
      toolchain:
        from: debian:bookworm
        steps:
          - apt: [gcc, make]
          - run: pip install --require-hashes -r requirements.txt
            network: true
            inputs: [requirements.txt]
            cache-mounts: [~/.cache/pip]
          - copy: {src: tools/, dst: /opt/tools}
          - env: {PATH: "/opt/tools/bin:$PATH"}
          - workdir: /workspace

A base (``from``) is one of :data:`BASE_FORMS`; :func:`parse_base` reads it into a :class:`BaseRef`.
A step is exactly one of ``apt``, ``run``, ``copy``, ``env`` or ``workdir``; ``network``, ``inputs``,
``cache-mounts``, ``shell`` and ``env`` go with ``run`` (an ``env`` without ``run`` is its own step).
Which names an image may build on (another image, no cycles) is checked workflow-wide by
:func:`image_reference_problems`, because a single image does not know the others.

Pure: no I/O, and no kiln imports except the spec's own helpers.
"""

from __future__ import annotations

import posixpath
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    model_validator,
)

from kiln.spec.caches import SANDBOX_HOME, WORKSPACE, KeyGlob
from kiln.spec.loader import Loc
from kiln.spec.references import nearest
from kiln.spec.scalars import ENV_NAME_PATTERN, check_env_name, scalar_text

__all__ = [
    "BASE_FORMS",
    "BUILTIN_BASES",
    "DEFAULT_SHELL",
    "BaseRef",
    "Image",
    "ImageStep",
    "base_image_name",
    "image_chain",
    "image_reference_problems",
    "known_images",
    "parse_base",
]

#: Bases kiln provides itself (``host`` is not one: it binds the host's /usr, it has no layers).
BUILTIN_BASES = ("busybox",)
#: What ``from:`` accepts, for messages and the schema.
BASE_FORMS = (
    "busybox",
    "debian:<suite>",
    "docker://HOST[:PORT]/NAME:TAG[@sha256:…]",
    "oci:DIR[:TAG]",
    "oci-archive:PATH",
    "another image's name",
)
#: How a ``run`` step is started when it names no ``shell``: as job steps are.
DEFAULT_SHELL = ("/bin/sh", "-e", "-c")

_IMAGE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
_SUITE = re.compile(r"[a-z][a-z0-9.-]{0,39}")
_HOST = re.compile(
    r"(?:localhost|[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+|\[[0-9a-fA-F:]+\]|[0-9.]+)(?::[0-9]{1,5})?"
)
_REPO = re.compile(r"[a-z0-9]+(?:[._-]+[a-z0-9]+)*(?:/[a-z0-9]+(?:[._-]+[a-z0-9]+)*)*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_PACKAGE = re.compile(r"[a-z0-9][a-z0-9+.-]+")
_KINDS = ("apt", "run", "copy", "env", "workdir")
_RUN_ONLY = ("network", "inputs", "cache_mounts", "shell")
_ALIASES = {"cache_mounts": "cache-mounts"}
# Paths a cache mount may not cover: kernel file systems, the step's tmpfs, the build's inputs.
_MOUNT_REFUSED = ("/", WORKSPACE, "/proc", "/sys", "/dev", "/tmp", "/run")


# -- bases ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BaseRef:
    """A parsed ``from:``.

    ``kind`` is ``busybox``, ``debian``, ``docker``, ``oci``, ``oci-archive`` or ``image`` (another
    image of the same file, named by ``name``). ``text`` is what the user wrote: the lock file is
    keyed by it.
    """

    kind: Literal["busybox", "debian", "docker", "oci", "oci-archive", "image"]
    text: str
    name: str = ""  # the image (kind image), the suite (debian) or the repository (docker)
    host: str = ""  # docker: registry host[:port]
    tag: str = ""  # docker, oci: the tag, when given
    digest: str = ""  # docker: a pinned manifest digest, used as given
    path: str = ""  # oci, oci-archive: relative to the repository

    @property
    def pinned(self) -> bool:
        """True when the reference names content, not a mutable name (nothing to lock)."""
        return self.kind in ("busybox", "image") or bool(self.digest)


def _repository_path(text: str, what: str) -> str:
    if not text:
        raise ValueError(f"{what} needs a path in the repository")
    if text.startswith(("/", "~")):
        raise ValueError(f"`{text}`: {what} paths are relative to the repository, not absolute")
    if ".." in text.split("/"):
        raise ValueError(f"`{text}`: `..` is not allowed in {what} paths")
    return posixpath.normpath(text)


def parse_base(text: str) -> BaseRef:
    """Read a ``from:`` value.

    Parameters
    ----------
    text
        What the user wrote, e.g. ``debian:bookworm`` or ``docker://127.0.0.1:5000/tools/cc:1``.

    Returns
    -------
    BaseRef
        The parsed reference. A bare name that is not a built-in base is ``kind="image"``: whether
        such an image exists is for :func:`image_reference_problems` to say.

    Raises
    ------
    ValueError
        The text is none of :data:`BASE_FORMS`; the message says which part is wrong.
    """
    value = text.strip()
    if value in BUILTIN_BASES:
        return BaseRef("busybox", value)
    if value == "host":
        raise ValueError(
            "`host` cannot be a base: it binds the host's own /usr and has no layers to build on; "
            "use `debian:<suite>` (e.g. `debian:bookworm`) or `busybox`"
        )
    if value.startswith("debian:"):
        suite = value.removeprefix("debian:")
        if not _SUITE.fullmatch(suite):
            raise ValueError(f"`{value}`: a Debian base names a suite, e.g. `debian:bookworm`")
        return BaseRef("debian", value, name=suite)
    if value == "debian":
        raise ValueError("`debian` needs a suite: `debian:bookworm`")
    if value.startswith("docker://"):
        return _docker(value)
    if value.startswith("oci-archive:"):
        return BaseRef("oci-archive", value, path=_repository_path(value.removeprefix("oci-archive:"), "oci"))
    if value.startswith("oci:"):
        rest = value.removeprefix("oci:")
        directory, _, tag = rest.partition(":")
        if tag and not _TAG.fullmatch(tag):
            raise ValueError(f"`{value}`: `{tag}` is not a valid tag")
        return BaseRef("oci", value, path=_repository_path(directory, "oci"), tag=tag)
    if ":" in value or "/" in value:
        guess = "docker://" + value if "/" in value else None
        hint = f" (did you mean `{guess}`?)" if guess else ""
        raise ValueError(
            f"`{value}` is not a base kiln knows{hint}; a base is one of " + ", ".join(BASE_FORMS)
        )
    if not re.fullmatch(_IMAGE_NAME_PATTERN, value):
        raise ValueError(f"`{value}` is not a valid image name")
    return BaseRef("image", value, name=value)


def _docker(value: str) -> BaseRef:
    rest = value.removeprefix("docker://")
    rest, _, digest = rest.partition("@")
    if digest and not _DIGEST.fullmatch(digest):
        raise ValueError(f"`{value}`: a pinned digest is `@sha256:` and 64 hex digits")
    host, slash, path = rest.partition("/")
    if not slash or not _HOST.fullmatch(host):
        raise ValueError(
            f"`{value}`: a registry image is `docker://HOST[:PORT]/NAME:TAG`; the registry host comes first"
        )
    name, tag = path, ""
    if ":" in path.rsplit("/", 1)[-1]:
        name, _, tag = path.rpartition(":")
        if not _TAG.fullmatch(tag):
            raise ValueError(f"`{value}`: `{tag}` is not a valid tag")
    if not _REPO.fullmatch(name):
        raise ValueError(
            f"`{value}`: `{name}` is not a valid repository name (lower case, `/` between parts)"
        )
    if not tag and not digest:
        raise ValueError(f"`{value}` needs a tag (`:1.2`) or a digest (`@sha256:…`)")
    return BaseRef("docker", value, name=name, host=host, tag=tag, digest=digest)


def _base(value: object) -> object:
    if isinstance(value, str):
        parse_base(value)  # raises ValueError with the reason
    return value


# -- steps ---------------------------------------------------------------------------------------


def _package(name: str) -> str:
    if "=" in name:
        raise ValueError(
            f"`{name}`: write the package name only; the versions installed are recorded in kiln.lock "
            "(`kiln images lock --update` refreshes them)"
        )
    if not _PACKAGE.fullmatch(name):
        raise ValueError(f"`{name}` is not a Debian package name")
    return name


def _image_path(text: str) -> str:
    path = text.strip()
    if path == "~" or path.startswith("~/"):
        path = SANDBOX_HOME + path[1:]
    if not path.startswith("/"):
        raise ValueError(f"`{text}` must be an absolute path inside the image")
    if ".." in path.split("/") or "\0" in path:
        raise ValueError(f"`{text}`: `..` and NUL are not allowed in an image path")
    normal = posixpath.normpath(path)
    return "/" + normal.lstrip("/")


def _cache_mount(text: str) -> str:
    path = _image_path(text)
    if path in _MOUNT_REFUSED or any(path.startswith(t + "/") for t in _MOUNT_REFUSED[2:]):
        raise ValueError(f"`{text}` cannot be a cache mount: the build needs it for itself")
    return path


def _shell(value: object) -> object:
    # `shell: bash -e -c` reads naturally; a list is taken as given.
    if isinstance(value, str):
        return shlex.split(value)
    return value


def _one_or_more(value: object) -> object:
    return [value] if isinstance(value, str) else value


def _env_value(value: object) -> object:
    if value is None:
        raise ValueError('the value is empty; write `""` for an empty string')
    return scalar_text(value)


_STRINGS = WithJsonSchema(
    {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}, mode="validation"
)
ImagePath = Annotated[str, AfterValidator(_image_path)]
Package = Annotated[str, AfterValidator(_package)]
CacheMount = Annotated[str, AfterValidator(_cache_mount)]
ImageEnv = Annotated[
    dict[
        Annotated[
            str,
            AfterValidator(check_env_name),
            WithJsonSchema({"type": "string", "pattern": ENV_NAME_PATTERN}),
        ],
        Annotated[str, BeforeValidator(_env_value)],
    ],
    Field(json_schema_extra={"additionalProperties": False}),
]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", validate_by_alias=True, validate_by_name=True)


class CopySpec(_Model):
    """What a ``copy`` step takes from the repository and where it puts it in the image."""

    src: Annotated[str, AfterValidator(lambda s: _repository_path(s.strip(), "copy"))] = Field(
        description="A file or folder in the repository; a folder's contents are copied."
    )
    dst: ImagePath = Field(description="Absolute path in the image.")


class ImageStep(_Model):
    """One step of an image: exactly one of ``apt``, ``run``, ``copy``, ``env``, ``workdir``."""

    apt: Annotated[list[Package], BeforeValidator(_one_or_more), _STRINGS] | None = Field(
        None, min_length=1, description="Debian packages to install (debian bases); versions go to kiln.lock."
    )
    run: str | None = Field(None, min_length=1, description="A shell command run in the image being built.")
    copy_: CopySpec | None = Field(None, alias="copy", description="Copy repository files into the image.")
    env: ImageEnv | None = Field(
        None,
        description="With `run`: that step's environment. Alone: set the image's environment "
        "(`$NAME` expands to the current value).",
    )
    workdir: ImagePath | None = Field(None, description="The image's working directory.")
    network: bool = Field(False, description="`run` only: network access while it runs.")
    inputs: Annotated[list[KeyGlob], BeforeValidator(_one_or_more), _STRINGS] = Field(
        default_factory=list,
        description="`run` only: repository files the step reads (in /workspace); their content is "
        "part of the layer's key.",
    )
    cache_mounts: Annotated[list[CacheMount], BeforeValidator(_one_or_more), _STRINGS] = Field(
        default_factory=list,
        alias="cache-mounts",
        description="`run` only: folders kept between builds on the runner, never in the layer or its key.",
    )
    shell: Annotated[list[str], BeforeValidator(_shell)] | None = Field(
        None, min_length=1, description="`run` only: the shell and its flags; default `/bin/sh -e -c`."
    )

    @model_validator(mode="after")
    def _one_kind(self) -> ImageStep:
        given = [k for k in _KINDS if getattr(self, "copy_" if k == "copy" else k) is not None]
        if self.run is not None and "env" in given:
            given.remove("env")  # with `run`, `env` is that step's environment
        if not given:
            raise ValueError("a step needs one of " + ", ".join(f"`{k}`" for k in _KINDS))
        if len(given) > 1:
            raise ValueError(
                "a step does one thing: "
                + " and ".join(f"`{k}`" for k in given)
                + " belong in separate steps"
            )
        if self.run is None:
            # Compared with the defaults, not `model_fields_set`: the dumped form sets every field.
            extra = [_ALIASES.get(k, k) for k in _RUN_ONLY if getattr(self, k) not in (False, [], None)]
            if extra:
                verb = "goes" if len(extra) == 1 else "go"
                raise ValueError(", ".join(f"`{k}`" for k in extra) + f" only {verb} with `run`")
        if self.run is not None and not self.run.strip():
            raise ValueError("`run` must not be empty")
        return self

    @property
    def kind(self) -> str:
        """``apt``, ``run``, ``copy``, ``env`` or ``workdir``."""
        for kind in ("apt", "run", "copy_", "workdir", "env"):
            if getattr(self, kind) is not None:
                return kind.rstrip("_")
        raise AssertionError("validated steps have a kind")

    @property
    def argv_shell(self) -> tuple[str, ...]:
        """The shell a ``run`` step starts, with its flags."""
        return tuple(self.shell) if self.shell else DEFAULT_SHELL


class Image(_Model):
    """An image: a base and the steps that make layers on it."""

    from_: Annotated[str, BeforeValidator(_base)] = Field(
        alias="from",
        description="`busybox`, `debian:<suite>`, `docker://HOST[:PORT]/NAME:TAG[@sha256:…]`, "
        "`oci:DIR[:TAG]`, `oci-archive:PATH` (in the repository) or another image's name.",
    )
    steps: list[ImageStep] = Field(default_factory=list)

    @property
    def base(self) -> BaseRef:
        """The parsed ``from``."""
        return parse_base(self.from_)


def _image_name(name: str) -> str:
    if not re.fullmatch(_IMAGE_NAME_PATTERN, name):
        raise ValueError(
            f"`{name}` is not a valid image name (letters, digits, `.`, `-` and `_`, starting with a "
            "letter or digit)"
        )
    if name in ("host", *BUILTIN_BASES):
        raise ValueError(f"`{name}` is a built-in image; give yours another name")
    return name


# The pattern becomes the schema's patternProperties of `images:` (other keys are refused there).
ImageName = Annotated[
    str, AfterValidator(_image_name), WithJsonSchema({"type": "string", "pattern": _IMAGE_NAME_PATTERN})
]


# -- workflow-wide checks -------------------------------------------------------------------------


def base_image_name(value: object) -> str | None:
    """The image a ``from:`` value builds on when it names another image, else ``None``."""
    if not isinstance(value, str):
        return None
    try:
        ref = parse_base(value)
    except ValueError:
        return None
    return ref.name if ref.kind == "image" else None


def image_reference_problems(images: object) -> list[tuple[Loc, str]]:
    """Find ``from:`` names that no image has, and images that build on themselves through others.

    Parameters
    ----------
    images
        The ``images:`` mapping as plain data (YAML-loaded or dumped); other shapes are skipped.

    Returns
    -------
    list[tuple[Loc, str]]
        One ``(path of the from value, message)`` per problem, in file order.
    """
    if not isinstance(images, Mapping):
        return []
    parents: dict[str, str] = {}
    found: list[tuple[Loc, str]] = []
    for name, image in images.items():
        value = image.get("from") if isinstance(image, Mapping) else None
        parent = base_image_name(value)
        if parent is None:
            continue
        if parent not in images:
            guess = nearest(parent, [str(n) for n in images] + ["busybox"])  # `busybx` is a typo too
            hint = (
                f"did you mean `{guess}`?"
                if guess
                else "a base is one of " + ", ".join(f"`{f}`" for f in BASE_FORMS)
            )
            found.append((("images", name, "from"), f"unknown base `{parent}`; {hint}"))
        else:
            parents[str(name)] = parent
    reported: set[str] = set()
    for name in parents:
        path, current = [name], parents[name]
        while current in parents and current not in path:
            path.append(current)
            current = parents[current]
        if current == name and name not in reported:
            cycle = " → ".join([*path, name])
            reported.update(path)
            found.append((("images", name, "from"), f"images build on each other in a cycle: {cycle}"))
    return found


def image_chain(images: Mapping[str, Image], name: str) -> list[str]:
    """The images ``name`` is built from, its own base image first and ``name`` last.

    Raises
    ------
    KeyError
        ``name`` or an image it builds on is not in ``images``.
    ValueError
        The images build on each other in a cycle (a validated workflow has none).
    """
    chain = [name]
    while (parent := base_image_name(images[chain[-1]].from_)) is not None:
        if parent in chain:
            raise ValueError(f"images build on each other in a cycle: {' → '.join([*chain, parent])}")
        chain.append(parent)
    return list(reversed(chain))


def known_images(data: Any) -> list[str]:
    """The names of the images a workflow (plain data) defines, in file order."""
    images = data.get("images") if isinstance(data, Mapping) else None
    return [str(n) for n in images] if isinstance(images, Mapping) else []
