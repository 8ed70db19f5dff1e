"""Where layer records and blobs live, as the builder sees it: one Protocol, two sides.

A *layer record* maps a layer key (everything that can change the layer, see :mod:`.keys`) to what
the build produced: its diff_id, its blob's digest and size. Records follow the commit protocol of
ARCHITECTURE.md §4 as ``entries`` rows of kind ``layer``: the builder *claims* a key (one build per
key at a time), uploads the blob, and *publishes*: a create-only commit; a lost race is fine, the
winner's record is as good (the same key means the same inputs).

- :class:`kiln.images.remote.RemoteLayerStore`: a runner's view, over HTTP with its lease.
- :class:`kiln.images.service.PlaneLayerStore`: the control plane's own view, for the CLI.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from kiln.images import wire
from kiln.images.capture import LayerBlob
from kiln.images.oci import LAYER_ZSTD

__all__ = ["Claim", "LayerRecord", "LayerStore", "publish_body", "record_of"]


@dataclass(frozen=True)
class LayerRecord:
    """A committed layer: what its key built."""

    key: str
    diff_id: str
    digest: str
    size_bytes: int
    media_type: str = LAYER_ZSTD
    trust_tier: str = "protected"
    unpacked_bytes: int = 0
    meta: dict[str, Any] = field(default_factory=dict)  # e.g. an imported base's config

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "diff_id": self.diff_id,
            "digest": self.digest,
            "size_bytes": self.size_bytes,
            "media_type": self.media_type,
            "trust_tier": self.trust_tier,
            "unpacked_bytes": self.unpacked_bytes,
            "meta": self.meta,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LayerRecord:
        return cls(
            key=str(data["key"]),
            diff_id=str(data["diff_id"]),
            digest=str(data["digest"]),
            size_bytes=int(data["size_bytes"]),
            media_type=str(data.get("media_type") or LAYER_ZSTD),
            trust_tier=str(data.get("trust_tier") or "protected"),
            unpacked_bytes=int(data.get("unpacked_bytes") or 0),
            meta=dict(data.get("meta") or {}),
        )


def record_of(layer: wire.LayerOut) -> LayerRecord:
    """The builder's view of a layer the API describes."""
    return LayerRecord(
        key=layer.key,
        diff_id=layer.diff_id,
        digest=layer.digest,
        size_bytes=layer.size_bytes,
        media_type=layer.media_type,
        trust_tier=layer.trust_tier,
        unpacked_bytes=layer.unpacked_bytes,
        meta=dict(layer.meta),
    )


def publish_body(blob: LayerBlob, meta: dict[str, Any]) -> wire.PublishIn:
    """What publishing ``blob`` tells the control plane."""
    return wire.PublishIn(
        diff_id=blob.diff_id,
        digest=blob.digest,
        size_bytes=blob.size_bytes,
        unpacked_bytes=blob.unpacked_bytes,
        media_type=LAYER_ZSTD,
        meta=meta,
    )


@dataclass(frozen=True)
class Claim:
    """The answer to a claim: build it (``claimed``), it exists (``committed``), or wait (``busy``)."""

    outcome: Literal["claimed", "committed", "busy"]
    entry_id: str | None = None
    record: LayerRecord | None = None
    holder: str | None = None  # who builds it now, for the log


class LayerStore(Protocol):
    """Layer records and blobs for one builder (one attempt's runner, or the CLI)."""

    @property
    def trust_tier(self) -> str:
        """The tier this builder reads as and writes with."""
        ...

    def lookup(self, key: str) -> LayerRecord | None:
        """The committed record of ``key`` this builder may use (its tier or a more trusted one)."""
        ...

    def claim(self, key: str, document: dict[str, Any], *, image: str) -> Claim:
        """Ask to build ``key``; ``busy`` while someone else's build of it is under way."""
        ...

    def publish(self, entry_id: str, blob: LayerBlob, *, meta: dict[str, Any]) -> LayerRecord:
        """Upload ``blob`` and commit the claimed entry create-only; the record that now stands."""
        ...

    def abandon(self, entry_id: str, reason: str) -> None:
        """Give up a claim (the build failed): nothing partial is ever committed."""
        ...

    def download(self, digest: str, dest: Path) -> None:
        """Write blob ``digest`` to ``dest``, verified."""
        ...
