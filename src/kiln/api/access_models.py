"""Request and response bodies of tenants, repositories, tokens and runner registration.

Pure pydantic, like :mod:`kiln.api.models`: the CLI and the runner import it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "NAME_PATTERN",
    "PrincipalOut",
    "RegisterIn",
    "RegisteredOut",
    "RepositoryIn",
    "RepositoryOut",
    "TenantIn",
    "TenantOut",
    "TokenCreateIn",
    "TokenCreatedOut",
    "TokenOut",
]

# Tenant and repository names: what fits in a URL path segment, a log line and a cache scope.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,199}$"
_TENANT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$"


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class PrincipalOut(BaseModel):
    """Who the caller is (``GET /v1/whoami``)."""

    kind: Literal["admin", "user", "registration", "runner", "job"]
    tenant: str | None
    scopes: list[str]
    name: str
    token_id: str | None = None
    runner_id: str | None = None
    attempt_id: str | None = None  # job tokens: the attempt they were issued for


class TenantIn(BaseModel):
    name: str = Field(pattern=_TENANT_PATTERN)


class TenantOut(_Out):
    name: str
    repositories: int
    runs: int


class RepositoryIn(BaseModel):
    name: str = Field(pattern=NAME_PATTERN)


class RepositoryOut(_Out):
    tenant: str
    name: str
    runs: int


class TokenCreateIn(BaseModel):
    kind: Literal["user", "registration", "admin"] = "user"
    tenant: str | None = None  # required for user tokens; optional for registration tokens
    name: str = Field(min_length=1, max_length=200)
    scopes: list[Literal["read", "write", "tokens"]] | None = None  # user tokens [default: read, write]
    expires_in_s: float | None = Field(default=None, gt=0)


class TokenOut(_Out):
    token_id: str
    kind: str
    tenant: str | None
    name: str
    scopes: list[str]
    runner_id: str | None = None
    created_at: datetime
    expires_at: datetime | None = None
    revoked_at: datetime | None = None


class TokenCreatedOut(TokenOut):
    token: str  # the secret: shown once, never stored


class RegisterIn(BaseModel):
    name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,199}$")
    labels: list[str] = []


class RegisteredOut(BaseModel):
    runner_id: str
    tenant: str | None
    token: str  # the runner's own token: lease with it
