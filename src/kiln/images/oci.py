"""OCI image facts kiln computes itself: digests, ChainIDs, configs, manifests (image-spec v1.1).

- A layer's **diff_id** is the sha256 of its *uncompressed* tar; its **digest** that of the blob
  as stored (zstd here). Keys chain on diff_ids, never on blob digests, so recompressing a layer
  changes nothing a key depends on.
- **ChainID**: ``ChainID(L0) = DiffID(L0)``, ``ChainID(Ln) = sha256(ChainID(Ln-1) + " " + DiffID(Ln))``.
- The **image digest** is the digest of the image's config JSON (the OCI image ID). The config
  lists every diff_id in order plus the environment and working directory, so it covers the
  ChainID *and* the config: what caches see as the job's toolchain.

Configs are written canonically (sorted keys, no spaces, ``created`` pinned to the epoch kiln
clamps mtimes to) so the same layers and settings give the same digest on every machine.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kiln.archive import CLAMPED_MTIME
from kiln.caches.keys import canonical_json

__all__ = [
    "CONFIG_MEDIA_TYPE",
    "INDEX_MEDIA_TYPE",
    "LAYER_GZIP",
    "LAYER_TAR",
    "LAYER_ZSTD",
    "MANIFEST_MEDIA_TYPE",
    "SOURCE_DATE_EPOCH",
    "ImageConfig",
    "chain_id",
    "config_bytes",
    "digest_of",
    "hex_of",
]

LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
CONFIG_MEDIA_TYPE = "application/vnd.oci.image.config.v1+json"
MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
INDEX_MEDIA_TYPE = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"

#: Every mtime in a layer is clamped to this (2000-01-01T00:00:00Z); build steps see it as
#: ``SOURCE_DATE_EPOCH`` so the tools that honour it write reproducible files.
SOURCE_DATE_EPOCH = CLAMPED_MTIME
_CREATED = "2000-01-01T00:00:00Z"


def digest_of(data: bytes) -> str:
    """``sha256:<hex>`` of ``data``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def hex_of(digest: str) -> str:
    """The hex part of ``sha256:<hex>``; refuses anything else."""
    algorithm, _, value = digest.partition(":")
    if algorithm != "sha256" or len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise ValueError(f"not a sha256 digest: {digest!r}")
    return value


def chain_id(diff_ids: Sequence[str]) -> str | None:
    """The ChainID of layers with these diff_ids, bottom first; ``None`` for no layers."""
    current: str | None = None
    for diff_id in diff_ids:
        current = diff_id if current is None else digest_of(f"{current} {diff_id}".encode())
    return current


@dataclass(frozen=True)
class ImageConfig:
    """What an image holds besides its layers: the environment and the working directory.

    ``env`` keeps its order (later steps append or replace in place), as OCI ``Env`` does.
    """

    env: tuple[tuple[str, str], ...] = ()
    workdir: str = ""
    architecture: str = "amd64"
    extra: Mapping[str, Any] = field(default_factory=dict)  # a registry base's other settings, kept

    def env_dict(self) -> dict[str, str]:
        return dict(self.env)

    def with_env(self, values: Mapping[str, str]) -> ImageConfig:
        """This config with ``values`` set (existing names keep their place)."""
        merged = dict(self.env)
        merged.update(values)
        return ImageConfig(tuple(merged.items()), self.workdir, self.architecture, self.extra)

    def with_workdir(self, workdir: str) -> ImageConfig:
        return ImageConfig(self.env, workdir, self.architecture, self.extra)

    @classmethod
    def from_oci(cls, document: Mapping[str, Any]) -> ImageConfig:
        """Read a base image's config: its Env and WorkingDir (other settings are kept as given)."""
        config = dict(document.get("config") or {})
        env: list[tuple[str, str]] = []
        for item in config.pop("Env", None) or []:
            name, _, value = str(item).partition("=")
            env.append((name, value))
        workdir = str(config.pop("WorkingDir", "") or "")
        return cls(tuple(env), workdir, str(document.get("architecture") or "amd64"), config)


def config_bytes(config: ImageConfig, diff_ids: Sequence[str]) -> bytes:
    """The image's OCI config as canonical JSON: its sha256 is the image digest."""
    settings: dict[str, Any] = dict(config.extra)
    if config.env:
        settings["Env"] = [f"{name}={value}" for name, value in config.env]
    if config.workdir:
        settings["WorkingDir"] = config.workdir
    document = {
        "architecture": config.architecture,
        "os": "linux",
        "created": _CREATED,
        "config": settings,
        "rootfs": {"type": "layers", "diff_ids": list(diff_ids)},
        "history": [{"created": _CREATED, "created_by": "kiln"} for _ in diff_ids],
    }
    return canonical_json(document)
