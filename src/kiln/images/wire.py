"""The HTTP bodies of the image-layer API, shared by the control plane and the runner.

Depends on nothing but pydantic. The runner sends what it computed (keys and their documents,
digests); the tenant and the trust tier a layer is read or written with come from the attempt's
run, decided by the server.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

__all__ = [
    "ClaimIn",
    "ClaimOut",
    "FailIn",
    "LayerListOut",
    "LayerOut",
    "LookupIn",
    "LookupOut",
    "PublishIn",
]

_DIGEST = r"^sha256:[0-9a-f]{64}$"


class LayerOut(BaseModel):
    entry_id: str
    key: str
    diff_id: str
    digest: str
    size_bytes: int
    media_type: str
    trust_tier: str
    unpacked_bytes: int = 0
    image: str | None = None
    step: str | None = None
    committed_at: datetime | None = None
    last_used_at: datetime | None = None
    meta: dict[str, Any] = {}


class LookupIn(BaseModel):
    keys: list[str] = Field(min_length=1, max_length=500)


class LookupOut(BaseModel):
    layers: dict[str, LayerOut]  # by key; keys without a usable layer are absent


class ClaimIn(BaseModel):
    key: str = Field(pattern=_DIGEST)
    document: dict[str, Any]
    image: str = Field(max_length=200)


class ClaimOut(BaseModel):
    """``claimed``: build it and publish ``entry_id``. ``committed``: use ``layer``. ``busy``: another
    build of this key is under way (``holder``); ask again later."""

    outcome: Literal["claimed", "committed", "busy"]
    entry_id: str | None = None
    layer: LayerOut | None = None
    holder: str | None = None


class PublishIn(BaseModel):
    diff_id: str = Field(pattern=_DIGEST)
    digest: str = Field(pattern=_DIGEST)
    size_bytes: int = Field(ge=0)
    unpacked_bytes: int = Field(ge=0)
    media_type: str
    meta: dict[str, Any] = {}


class FailIn(BaseModel):
    reason: str = Field(max_length=2000)


class LayerListOut(BaseModel):
    layers: list[LayerOut]
