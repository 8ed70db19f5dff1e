"""The HTTP bodies of the artifact API, shared by the routes, the runner and the CLI.

Pure pydantic, like :mod:`kiln.api.models`: the runner imports it without importing the control
plane. Sizes are ``*_bytes``, times are timezone-aware UTC.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "DIGEST_PATTERN",
    "ArtifactFailIn",
    "ArtifactFinalizeIn",
    "ArtifactOut",
    "ArtifactReserveIn",
    "ManifestEntry",
    "NeededArtifactOut",
]

DIGEST_PATTERN = r"^sha256:[0-9a-f]{64}$"

#: What a job that needs an artifact is told about it: ``committed`` (download it), ``uploading``
#: (its producer is still at it: wait), or why it cannot be had.
NeededState = Literal["committed", "uploading", "failed", "expired", "deleted", "missing"]


class ManifestEntry(BaseModel):
    """One member of an artifact archive: what extraction must reproduce."""

    model_config = ConfigDict(frozen=True)

    path: str
    kind: Literal["file", "dir", "link"]
    mode: int  # permission bits as packed (0o7777 minus setuid/setgid/sticky)
    size_bytes: int = 0
    sha256: str | None = None  # "sha256:<hex>" of a file's content
    target: str | None = None  # a link's target, as written


class ArtifactReserveIn(BaseModel):
    """The producer's claim: this attempt uploads artifact ``name`` as blob ``digest``.

    ``digest`` is None when there is nothing to upload (no files matched): the artifact is then
    recorded and failed at once with the runner's reason, so jobs that need it can say why.
    """

    name: str
    digest: str | None = Field(None, pattern=DIGEST_PATTERN)
    size_bytes: int | None = Field(None, ge=0)
    files: int = Field(0, ge=0)
    unpacked_bytes: int = Field(0, ge=0)
    manifest: list[ManifestEntry] = []


class ArtifactFinalizeIn(BaseModel):
    digest: str = Field(pattern=DIGEST_PATTERN)
    size_bytes: int = Field(ge=0)


class ArtifactFailIn(BaseModel):
    reason: str = Field(min_length=1, max_length=2000)


class ArtifactOut(BaseModel):
    """An artifact as stored: one row of ``kiln artifacts ls``."""

    model_config = ConfigDict(from_attributes=True)

    artifact_id: str
    run_id: str
    job: str
    name: str
    state: str
    digest: str | None
    size_bytes: int | None
    files: int
    unpacked_bytes: int
    created_at: datetime
    committed_at: datetime | None
    expires_at: datetime | None
    attempt_number: int | None
    failure: str | None
    manifest: list[ManifestEntry] | None = None  # on the single-artifact views only
    manifest_truncated: bool = False
    upload_needed: bool = False  # reserve only: False when the blob is stored already


class NeededArtifactOut(BaseModel):
    """An artifact of an earlier job that the asking job ``needs:``, with its state."""

    name: str
    job: str
    state: NeededState
    reason: str | None = None  # why it is not committed, in words
    # The committed (or last) record, with its manifest. Its blob is fetched like any other, with a
    # download grant of the blob endpoints: the attempt's tenant references it.
    artifact: ArtifactOut | None = None
