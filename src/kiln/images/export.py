"""Write a built image as a standard OCI image layout (``kiln images export``).

The layout (``oci-layout``, ``index.json``, ``blobs/sha256/…``) is what ``skopeo`` (``oci:DIR:TAG``)
and ``umoci`` read. kiln stores layers zstd-compressed, but umoci 0.4.7 (Debian 12) cannot unpack
zstd layers, so exports are gzip by default (``--compression gzip``); ``none`` writes plain tars
and ``zstd`` kiln's own blobs as they are. The layer *tars* are the same bytes in every case, so
the diff_ids, the config and hence the image digest do not depend on the compression.

Exporting into a layout that already has images adds (or moves) one tag and keeps the others.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import zstandard

from kiln.errors import UsageError
from kiln.images.oci import (
    CONFIG_MEDIA_TYPE,
    INDEX_MEDIA_TYPE,
    LAYER_GZIP,
    LAYER_TAR,
    LAYER_ZSTD,
    MANIFEST_MEDIA_TYPE,
    ImageConfig,
    config_bytes,
    digest_of,
    hex_of,
)
from kiln.images.store import LayerRecord

__all__ = ["Compression", "ExportResult", "export_image", "write_blob"]

Compression = Literal["gzip", "zstd", "none"]
_REF_NAME = "org.opencontainers.image.ref.name"
_MEDIA = {"gzip": LAYER_GZIP, "zstd": LAYER_ZSTD, "none": LAYER_TAR}


@dataclass(frozen=True)
class ExportResult:
    layout: Path
    tag: str
    manifest_digest: str
    config_digest: str  # = the image digest kiln reports
    layers: int


def write_blob(layout: Path, data: bytes) -> tuple[str, int]:
    """Store ``data`` under ``blobs/sha256/``; return its digest and size."""
    digest = digest_of(data)
    path = layout / "blobs/sha256" / hex_of(digest)
    if not path.exists():
        path.write_bytes(data)
    return digest, len(data)


def _converted(zstd_blob: Path, dest_dir: Path, compression: Compression) -> tuple[str, int]:
    """Re-encode one of kiln's zstd layer blobs as ``compression``; store it; digest and size."""
    tmp = dest_dir / f".export-{os.getpid()}"
    sha, size = hashlib.sha256(), 0
    try:
        with zstd_blob.open("rb") as source, tmp.open("wb") as raw:
            if compression == "zstd":
                shutil.copyfileobj(source, raw)
            else:
                reader = zstandard.ZstdDecompressor().stream_reader(source)
                # mtime=0 and no file name: the same tar always gives the same gzip bytes.
                out = (
                    gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="")
                    if compression == "gzip"
                    else raw
                )
                while chunk := reader.read(1 << 20):
                    out.write(chunk)
                if out is not raw:
                    out.close()
        with tmp.open("rb") as back:
            while chunk := back.read(1 << 20):
                sha.update(chunk)
                size += len(chunk)
        digest = "sha256:" + sha.hexdigest()
        os.replace(tmp, dest_dir / hex_of(digest))
        return digest, size
    finally:
        tmp.unlink(missing_ok=True)


def _index(layout: Path) -> dict[str, Any]:
    try:
        return json.loads((layout / "index.json").read_text())
    except FileNotFoundError:
        return {"schemaVersion": 2, "mediaType": INDEX_MEDIA_TYPE, "manifests": []}
    except (OSError, ValueError) as exc:
        raise UsageError(f"{layout} has an unreadable index.json: {exc}") from exc


def export_image(
    layout: Path,
    *,
    tag: str,
    records: Sequence[LayerRecord],
    config: ImageConfig,
    fetch: Callable[[LayerRecord, Path], None],
    compression: Compression = "gzip",
) -> ExportResult:
    """Write the image made of ``records`` (bottom first) and ``config`` into ``layout`` as ``tag``.

    Parameters
    ----------
    fetch
        ``fetch(record, dest)`` writes the record's zstd blob to ``dest``, verified.
    """
    if layout.exists() and not layout.is_dir():
        raise UsageError(f"{layout} exists and is not a folder")
    blobs = layout / "blobs/sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    (layout / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    descriptors = []
    for record in records:
        staged = blobs / f".fetch-{hex_of(record.digest)[:16]}"
        try:
            fetch(record, staged)
            digest, size = _converted(staged, blobs, compression)
        finally:
            staged.unlink(missing_ok=True)
        descriptors.append({"mediaType": _MEDIA[compression], "digest": digest, "size": size})
    config_digest, config_size = write_blob(layout, config_bytes(config, [r.diff_id for r in records]))
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": config_digest, "size": config_size},
        "layers": descriptors,
    }
    manifest_digest, manifest_size = write_blob(layout, json.dumps(manifest, sort_keys=True).encode())
    index = _index(layout)
    kept = [m for m in index.get("manifests", []) if m.get("annotations", {}).get(_REF_NAME) != tag]
    kept.append(
        {
            "mediaType": MANIFEST_MEDIA_TYPE,
            "digest": manifest_digest,
            "size": manifest_size,
            "annotations": {_REF_NAME: tag},
        }
    )
    index["manifests"] = kept
    tmp = layout / ".index.json.tmp"
    tmp.write_text(json.dumps(index, sort_keys=True))
    os.replace(tmp, layout / "index.json")
    return ExportResult(layout, tag, manifest_digest, config_digest, len(records))
