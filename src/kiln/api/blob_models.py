"""Request and response bodies of the blob endpoints: uploads and downloads through grants.

Like ``kiln.api.models`` this depends on pydantic only, so the runner imports it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

__all__ = [
    "DIGEST_PATTERN",
    "DownloadGrantIn",
    "DownloadGrantOut",
    "GrantOut",
    "PartGrantsIn",
    "PartGrantsOut",
    "PartIn",
    "UploadCompleteIn",
    "UploadCompleteOut",
    "UploadStartIn",
    "UploadStartOut",
]

DIGEST_PATTERN = r"^sha256:[0-9a-f]{64}$"
MAX_GRANTS_PER_CALL = 1000


class GrantOut(BaseModel):
    """A grant: send the request to ``url`` (absolute, or a path on the control plane) with ``headers``."""

    url: str
    headers: dict[str, str] = Field(default_factory=dict)
    expires_in_s: float


class PartIn(BaseModel):
    part_number: int = Field(ge=1, le=10_000)
    size_bytes: int = Field(ge=0)
    etag: str = Field(pattern=r"^[0-9a-f]{32}$")


class UploadStartIn(BaseModel):
    digest: str = Field(pattern=DIGEST_PATTERN)
    size_bytes: int = Field(ge=0)
    resume_upload_id: str | None = Field(default=None, max_length=400)
    # A proof of possession (kiln.storage.possession) for the challenge an earlier answer gave.
    proof: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")


class UploadStartOut(BaseModel):
    """Either ``exists`` (the blob is stored: upload nothing) or an open session.

    A session is a multipart upload (``upload_id``, ``part_size``, ``grants`` for some of the parts
    still missing, ``parts`` already listed by the server when it was resumed) or, for a small blob,
    a single PUT (``put``).
    """

    exists: bool
    session_id: str | None = None
    upload_id: str | None = None
    part_size: int | None = None
    resumed: bool = False
    parts: list[PartIn] = Field(default_factory=list)
    grants: dict[int, GrantOut] = Field(default_factory=dict)
    put: GrantOut | None = None
    # The blob is stored but not yet this tenant's: start again with the proof for this challenge.
    challenge: str | None = None


class PartGrantsIn(BaseModel):
    part_numbers: list[int] = Field(default_factory=list, max_length=MAX_GRANTS_PER_CALL)


class PartGrantsOut(BaseModel):
    grants: dict[int, GrantOut] = Field(default_factory=dict)
    put: GrantOut | None = None  # a single-put session's fresh PUT grant


class UploadCompleteIn(BaseModel):
    parts: list[PartIn] | None = None  # a multipart upload's parts, ascending; None for a single put
    existed: bool = False  # a single put found the blob there (HTTP 412)
    proof: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")  # answers a "prove" outcome


class UploadCompleteOut(BaseModel):
    """``prove``: another writer stored the blob first; complete again with the proof for ``challenge``."""

    outcome: Literal["created", "existed", "prove"]
    size_bytes: int
    challenge: str | None = None


class DownloadGrantIn(BaseModel):
    digest: str = Field(pattern=DIGEST_PATTERN)


class DownloadGrantOut(BaseModel):
    digest: str
    size_bytes: int
    grant: GrantOut
