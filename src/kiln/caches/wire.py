"""The HTTP bodies of the cache API, shared by the control plane, the runner and the CLI.

Depends on nothing but pydantic, so the runner may import it without reaching the control plane's
insides. What the runner sends is what it *computed* (keys, documents, digests); what it may read
and where it may write is decided by the server from the attempt's run, never taken from here.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "CacheEntryOut",
    "CacheKeyIn",
    "CacheListOut",
    "CommitIn",
    "CommitOut",
    "CorruptIn",
    "CorruptOut",
    "ExplainInputOut",
    "ExplainOut",
    "FailIn",
    "LookupIn",
    "LookupOut",
    "LookupResultOut",
    "RemoveIn",
    "RemoveOut",
    "ReserveIn",
    "ReserveOut",
]

_DIGEST = r"^sha256:[0-9a-f]{64}$"
CacheType = Literal["deps", "compiler", "build"]


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class CacheKeyIn(BaseModel):
    """A cache as the runner computed it before the steps: name, type, key, and its inputs."""

    name: str = Field(min_length=1, max_length=100)
    type: CacheType
    key: str = Field(pattern=_DIGEST)
    version: str = Field(pattern=_DIGEST)
    document: dict[str, Any]
    paths: list[str] = Field(min_length=1)
    restore_keys: bool = False


class LookupIn(BaseModel):
    caches: list[CacheKeyIn]


class CacheEntryOut(_Out):
    entry_id: str
    name: str
    type: str
    key: str
    scope: str
    trust_tier: str
    digest: str | None
    size_bytes: int | None
    unpacked_bytes: int | None = None
    files: int | None = None
    content_digest: str | None = None
    paths: list[str] = []
    status: str
    created_at: datetime
    committed_at: datetime | None = None
    last_used_at: datetime | None = None
    producer_run_id: str | None = None
    producer_job: str | None = None
    repo: str


class LookupResultOut(BaseModel):
    name: str
    restore: Literal["hit", "fallback", "miss"]
    entry: CacheEntryOut | None = None


class LookupOut(BaseModel):
    results: list[LookupResultOut]


class ReserveIn(CacheKeyIn):
    """A save: what the runner packed. ``restored_entry_id``: the entry it restored, if any."""

    content_digest: str = Field(pattern=_DIGEST)
    unpacked_bytes: int = Field(ge=0)
    files: int = Field(ge=0)
    restored_entry_id: str | None = None


class ReserveOut(BaseModel):
    """``reserved``: upload and commit ``entry_id``. ``exists``: a ``build`` entry of this key is
    committed already (write-once: nothing to do). ``unchanged``: an entry of this key with the same
    content is committed already."""

    outcome: Literal["reserved", "exists", "unchanged"]
    entry_id: str | None = None
    existing: CacheEntryOut | None = None


class CommitIn(BaseModel):
    digest: str = Field(pattern=_DIGEST)
    size_bytes: int = Field(ge=0)


class CommitOut(BaseModel):
    save: Literal["saved", "lost-race"]
    entry: CacheEntryOut


class FailIn(BaseModel):
    reason: str = Field(max_length=2000)


class CorruptIn(BaseModel):
    name: str
    reason: str = Field(max_length=2000)


class CorruptOut(BaseModel):
    quarantined: bool
    message: str


class CacheListOut(BaseModel):
    entries: list[CacheEntryOut]


class ExplainInputOut(BaseModel):
    name: str
    value: str | None
    nearest: str | None = None
    differs: bool = False


class ExplainOut(BaseModel):
    job: str
    cache: str
    type: str
    run_id: str
    repo: str
    key: str
    scope: str
    trust_tier: str
    readable_scopes: list[str]
    restore: str
    matched: CacheEntryOut | None = None
    nearest: CacheEntryOut | None = None
    inputs: list[ExplainInputOut]
    notes: list[str] = []


class RemoveIn(BaseModel):
    """What to remove: entry ids, or every entry matching the filters (at least one is required)."""

    entry_ids: list[str] = []
    repo: str | None = None
    name: str | None = None
    scope: str | None = None
    all: bool = False


class RemoveOut(BaseModel):
    removed: int
