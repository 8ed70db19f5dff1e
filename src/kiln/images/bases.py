"""The bottom of every image: its base layers, their keys, and how to make each one.

- ``busybox``: kiln's built-in busybox root, captured as one layer.
- ``debian:<suite>``: ``mmdebstrap --variant=minbase`` from the Debian mirror, one layer, keyed
  on the suite's locked ``InRelease`` hash (and mmdebstrap's version). If the mirror has moved on
  when a build must run, the build cannot honour the lock: it re-resolves and says so.
- ``docker://…``: the locked manifest's layers, each keyed by its diff_id (the registry's content,
  recompressed with zstd for the blob store); fetched with ``skopeo copy`` only on a miss.
- ``oci:DIR[:TAG]`` and ``oci-archive:PATH``: an image in the repository, read directly; its
  content is in the snapshot, so it needs no lock entry.

A :class:`BasePlan` is known without any network access when the lock has what it needs: an
unchanged image is ready from the runner's cache alone.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import zstandard

from kiln.errors import DigestMismatch, ImageBuildFailed, ImageSourceUnavailable
from kiln.images.builtin import busybox_image
from kiln.images.capture import LayerBlob, capture_layer, remove_noise
from kiln.images.keys import layer_document
from kiln.images.layers import LayerCache
from kiln.images.lockfile import Lock
from kiln.images.oci import SOURCE_DATE_EPOCH, ImageConfig, hex_of
from kiln.images.resolve import (
    debian_architecture,
    inrelease_digest,
    not_in_registry,
    oci_manifest_digest,
    registry_call,
    registry_digest,
    run_tool,
    tls_flag,
)
from kiln.images.unpack import decompressed
from kiln.sandbox.base import DEFAULT_PATH
from kiln.spec.images import BaseRef

__all__ = ["BasePlan", "PlannedLayer", "StaleLockEntry", "plan_base", "resolve_base"]

_MMDEBSTRAP = Path("/usr/bin/mmdebstrap")
_DEFAULT_CONFIG = ImageConfig(env=(("PATH", DEFAULT_PATH),))


class StaleLockEntry(Exception):
    """The lock names something the source no longer has; the entry was resolved anew."""

    def __init__(self, text: str, entry: dict[str, Any], why: str) -> None:
        super().__init__(f"{text}: {why}")
        self.text, self.entry, self.why = text, entry, why


@dataclass
class PlannedLayer:
    """One layer of a base: its key document and how to make its blob when no one has it."""

    label: str
    document: dict[str, Any]
    make: Callable[[], LayerBlob]
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class BasePlan:
    layers: list[PlannedLayer]
    config: ImageConfig
    close: Callable[[], None] = lambda: None


def _mmdebstrap_version() -> str:
    """mmdebstrap's version, read from the script (starting perl costs more than the whole check)."""
    try:
        found = re.search(rb"VERSION\s*=\s*'([^']+)'", _MMDEBSTRAP.read_bytes())
    except OSError:
        return "missing"
    return found.group(1).decode() if found else "unknown"


def plan_base(
    ref: BaseRef,
    lock: Lock,
    cache: LayerCache,
    source: Path,
    log: Callable[[str], None],
    *,
    offline: bool = False,
) -> BasePlan:
    """The layers and config of base ``ref``, resolving (and locking) what the lock lacks.

    ``offline`` refuses to resolve: a missing lock entry raises :class:`LookupError`.

    Raises
    ------
    ImageBuildFailed
        The base does not exist (an unknown suite, a missing layout in the repository).
    ImageSourceUnavailable
        A registry or mirror needed to resolve it cannot be reached.
    """
    if ref.kind == "busybox":
        return _busybox(cache)
    if offline and ref.kind in ("debian", "docker") and lock.base(ref.text) is None:
        raise LookupError(f"base {ref.text}: no entry in kiln.lock")
    if ref.kind == "debian":
        return _debian(ref, lock, cache, log)
    if ref.kind == "docker":
        return _docker(ref, lock, cache)
    if ref.kind == "oci":
        return _oci_layout(ref, source / ref.path, cache, label=ref.text)
    if ref.kind == "oci-archive":
        return _oci_archive(ref, source, cache)
    raise ImageBuildFailed(f"`{ref.text}` is not a base")  # kind image is the builder's to follow


def resolve_base(ref: BaseRef) -> dict[str, Any]:
    """The lock entry of a registry or Debian base as the source has it now (network)."""
    if ref.kind == "docker":
        return _docker_entry(ref)
    if ref.kind == "debian":
        return inrelease_digest(ref.name)
    raise ValueError(f"{ref.text} has nothing to lock")


# -- busybox ---------------------------------------------------------------------------------------


def _busybox(cache: LayerCache) -> BasePlan:
    rootfs = busybox_image(cache.root)
    document = layer_document(parent=None, step={"kind": "busybox", "content": rootfs.digest})

    def make() -> LayerBlob:
        with cache.scratch("busybox-") as scratch:
            return capture_layer(rootfs.layers[0], scratch.parent / f"{scratch.name}.layer")

    return BasePlan([PlannedLayer("base busybox", document, make)], _DEFAULT_CONFIG)


# -- debian ----------------------------------------------------------------------------------------


def _debian(ref: BaseRef, lock: Lock, cache: LayerCache, log: Callable[[str], None]) -> BasePlan:
    entry = lock.base(ref.text)
    if entry is None or entry.get("architecture") != debian_architecture():
        why = (
            "no entry in kiln.lock"
            if entry is None
            else f"kiln.lock's entry is for {entry.get('architecture')}, not {debian_architecture()}"
        )
        entry = inrelease_digest(ref.name)
        lock.set_base(ref.text, entry, f"resolved ({why})")
    tool = f"mmdebstrap {_mmdebstrap_version()}"
    step = {"kind": "debian", "suite": ref.name, "variant": "minbase", "tool": tool}
    document = layer_document(parent=None, step=step, lock=entry)
    locked = dict(entry)

    def make() -> LayerBlob:
        log(f"kiln: image base {ref.text}: mmdebstrap --variant=minbase {ref.name} from {locked['mirror']}")
        with cache.scratch("debian-") as scratch:
            root = scratch / "root"
            run_tool(
                [
                    "mmdebstrap",
                    "--variant=minbase",
                    "--mode=root",
                    f"--architectures={locked['architecture']}",
                    "--skip=cleanup/apt/lists",
                    '--aptopt=Acquire::Retries "3"',
                    ref.name,
                    str(root),
                    locked["mirror"],
                ],
                what=f"build the base {ref.text} with mmdebstrap",
                env={"SOURCE_DATE_EPOCH": str(SOURCE_DATE_EPOCH)},
            )
            seen = _downloaded_release(root)
            if seen is not None and seen != locked["inrelease"]:
                current = {**locked, "inrelease": seen}
                raise StaleLockEntry(
                    ref.text, current, "the mirror has moved on since kiln.lock was written; resolved again"
                )
            _clean_debian_root(root)
            return capture_layer(root, scratch.parent / f"{scratch.name}.layer")

    return BasePlan([PlannedLayer(f"base {ref.text}", document, make)], _DEFAULT_CONFIG)


def _downloaded_release(root: Path) -> str | None:
    lists = root / "var/lib/apt/lists"
    for path in sorted(lists.glob("*_InRelease")):
        return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    return None


def _clean_debian_root(root: Path) -> None:
    """What mmdebstrap leaves that is the host's or the day's, not the suite's."""
    lists = root / "var/lib/apt/lists"
    for path in lists.iterdir():
        if path.name not in ("lock", "partial"):
            path.unlink()
    for name in ("etc/resolv.conf", "etc/hostname"):
        (root / name).unlink(missing_ok=True)
    remove_noise(root)


# -- OCI images: registries, layouts, archives ------------------------------------------------------


def _import_plan(
    diff_ids: list[str],
    config: ImageConfig,
    blob_of: Callable[[int], tuple[BinaryIO, str]],
    label: str,
    cache: LayerCache,
) -> list[PlannedLayer]:
    planned: list[PlannedLayer] = []
    for index, diff_id in enumerate(diff_ids):

        def make(index: int = index, diff_id: str = diff_id) -> LayerBlob:
            source, media_type = blob_of(index)
            with source:
                return recompress(
                    source, media_type, cache.tmp / f"import-{hex_of(diff_id)[:16]}.layer", diff_id
                )

        document = layer_document(parent=None, step={"kind": "import", "diff_id": diff_id})
        planned.append(PlannedLayer(f"{label} layer {index + 1}/{len(diff_ids)}", document, make))
    return planned


def recompress(source: BinaryIO, media_type: str, dest: Path, diff_id: str) -> LayerBlob:
    """A registry layer as kiln stores it: the same tar (so the same diff_id), zstd-compressed.

    Raises
    ------
    DigestMismatch
        The tar is not ``diff_id``.
    """
    plain = hashlib.sha256()
    packed = hashlib.sha256()
    size = total = 0
    compressor = zstandard.ZstdCompressor(level=3, threads=-1, write_checksum=True)
    with open(dest, "wb") as out, compressor.stream_writer(out, closefd=False) as zstd_out:
        reader = decompressed(source, media_type)
        while chunk := reader.read(1 << 20):
            plain.update(chunk)
            total += len(chunk)
            zstd_out.write(chunk)
    with open(dest, "rb") as back:
        while chunk := back.read(1 << 20):
            packed.update(chunk)
            size += len(chunk)
    found = "sha256:" + plain.hexdigest()
    if found != diff_id:
        dest.unlink(missing_ok=True)
        raise DigestMismatch(f"a base layer's tar is {found}, not {diff_id} as its config says")
    return LayerBlob(dest, diff_id, "sha256:" + packed.hexdigest(), size, total, 0)


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ImageBuildFailed(f"{what}: cannot read {path.name}: {exc}") from exc


def _layout_image(layout: Path, manifest_digest: str, what: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The manifest and config of an image in an OCI layout (one level of index followed)."""
    manifest = _read_json(layout / "blobs/sha256" / hex_of(manifest_digest), what)
    if "manifests" in manifest:  # an index: take this machine's platform
        arch = debian_architecture()
        choices = [
            m for m in manifest["manifests"] if m.get("platform", {}).get("architecture") in (arch, None)
        ]
        if not choices:
            raise ImageBuildFailed(f"{what}: the image has no {arch} variant")
        manifest = _read_json(layout / "blobs/sha256" / hex_of(choices[0]["digest"]), what)
    config = _read_json(layout / "blobs/sha256" / hex_of(manifest["config"]["digest"]), what)
    return manifest, config


def _layout_plan(
    layout: Path, manifest_digest: str, cache: LayerCache, label: str
) -> tuple[list[PlannedLayer], ImageConfig]:
    manifest, config_doc = _layout_image(layout, manifest_digest, label)
    diff_ids = list(config_doc.get("rootfs", {}).get("diff_ids", []))
    layers = manifest.get("layers", [])
    if len(layers) != len(diff_ids) or not layers:
        raise ImageBuildFailed(f"{label}: the image's manifest and config disagree on its layers")

    def blob_of(index: int) -> tuple[BinaryIO, str]:
        descriptor = layers[index]
        return open(layout / "blobs/sha256" / hex_of(descriptor["digest"]), "rb"), descriptor["mediaType"]

    config = ImageConfig.from_oci(config_doc)
    return _import_plan(
        diff_ids, ImageConfig(config.env, config.workdir, config.architecture), blob_of, label, cache
    ), config


def _oci_layout(ref: BaseRef, layout: Path, cache: LayerCache, *, label: str) -> BasePlan:
    if not layout.is_dir():
        raise ImageBuildFailed(f"base {label}: `{ref.path}` is not a folder in the repository")
    digest = oci_manifest_digest(layout, ref.tag, what=f"base {label}")
    layers, config = _layout_plan(layout, digest, cache, f"base {label}")
    return BasePlan(layers, ImageConfig(config.env, config.workdir, config.architecture))


def _oci_archive(ref: BaseRef, source: Path, cache: LayerCache) -> BasePlan:
    archive = source / ref.path
    if not archive.is_file():
        raise ImageBuildFailed(f"base {ref.text}: `{ref.path}` is not a file in the repository")
    staging = cache.tmp / f"archive-{hashlib.sha256(str(archive).encode()).hexdigest()[:12]}-{id(ref):x}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(staging, filter="data")
    except (tarfile.TarError, OSError) as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise ImageBuildFailed(f"base {ref.text}: not a readable OCI archive: {exc}") from exc
    try:
        plan = _oci_layout(ref, staging, cache, label=ref.text)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    plan.close = lambda: shutil.rmtree(staging, ignore_errors=True)
    return plan


def _docker_entry(ref: BaseRef) -> dict[str, Any]:
    """Resolve a registry base: its manifest digest now, and that image's diff_ids and settings."""
    digest = registry_digest(ref)
    raw = registry_call(
        ["skopeo", "inspect", "--config", *tls_flag(ref.host), f"docker://{ref.host}/{ref.name}@{digest}"],
        ref,
        what=f"read the config of {ref.text}",
    )
    try:
        config_doc = json.loads(raw)
    except ValueError as exc:
        raise ImageSourceUnavailable(f"the registry gave no readable config for {ref.text}") from exc
    config = ImageConfig.from_oci(config_doc)
    return {
        "digest": digest,
        "diff_ids": list(config_doc.get("rootfs", {}).get("diff_ids", [])),
        "env": [f"{k}={v}" for k, v in config.env],
        "workdir": config.workdir,
        "architecture": config.architecture,
    }


def _docker(ref: BaseRef, lock: Lock, cache: LayerCache) -> BasePlan:
    entry = lock.base(ref.text)
    if entry is None or (ref.digest and entry.get("digest") != ref.digest) or "diff_ids" not in entry:
        if entry is None:
            why = "no entry in kiln.lock"
        elif ref.digest and entry.get("digest") != ref.digest:
            why = f"kiln.lock had {entry.get('digest')}, not the digest the reference names"
        else:
            why = "kiln.lock's entry lacks the image's layers"
        entry = _docker_entry(ref)
        lock.set_base(ref.text, entry, f"resolved to {entry['digest']} ({why})")
    env = tuple(tuple(item.split("=", 1)) for item in entry.get("env", []) if "=" in item)
    config = ImageConfig(env, str(entry.get("workdir", "")), str(entry.get("architecture", "amd64")))  # type: ignore[arg-type]
    fetched: dict[str, Path] = {}

    def layout() -> Path:
        if "layout" not in fetched:
            target = cache.tmp / f"registry-{hex_of(entry['digest'])[:16]}"
            shutil.rmtree(target, ignore_errors=True)
            source = f"docker://{ref.host}/{ref.name}@{entry['digest']}"
            try:
                run_tool(
                    [
                        "skopeo",
                        "copy",
                        "--quiet",
                        *tls_flag(ref.host, "--src-tls-verify"),
                        source,
                        f"oci:{target}:base",
                    ],
                    what=f"fetch {ref.text} ({entry['digest']})",
                )
            except ImageSourceUnavailable as exc:
                if not not_in_registry(exc):
                    raise
                if ref.digest:  # pinned in the workflow itself: nothing to resolve again
                    raise ImageBuildFailed(
                        f"base {ref.text}: the registry at {ref.host} no longer has this digest"
                    ) from exc
                current = _docker_entry(ref)
                raise StaleLockEntry(
                    ref.text, current, "the locked digest is gone from the registry; resolved again"
                ) from exc
            fetched["layout"] = target
        return fetched["layout"]

    def blob_of(index: int) -> tuple[BinaryIO, str]:
        root = layout()
        manifest, config_doc = _layout_image(root, oci_manifest_digest(root, "base", what=ref.text), ref.text)
        if list(config_doc.get("rootfs", {}).get("diff_ids", [])) != entry["diff_ids"]:
            raise ImageBuildFailed(f"{ref.text}: the registry's image is not the one kiln.lock describes")
        descriptor = manifest["layers"][index]
        return open(root / "blobs/sha256" / hex_of(descriptor["digest"]), "rb"), descriptor["mediaType"]

    def close() -> None:
        if "layout" in fetched:
            shutil.rmtree(fetched["layout"], ignore_errors=True)

    return BasePlan(
        _import_plan(list(entry["diff_ids"]), config, blob_of, f"base {ref.text}", cache), config, close
    )
