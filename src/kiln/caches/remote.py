"""The cache API seen from a runner (with its lease) and from a user (the CLI), over HTTP.

Typed wrappers around :meth:`kiln.runner.client.ControlPlaneClient.cache_call`; the routes are in
:mod:`kiln.api.routes.caches`.
"""

from __future__ import annotations

from typing import Any

from kiln.caches import wire
from kiln.runner.client import ControlPlaneClient

__all__ = ["AttemptCaches", "UserCaches"]


class AttemptCaches:
    """What one attempt's runner asks about caches; every call carries the lease token."""

    def __init__(self, client: ControlPlaneClient, attempt_id: str, lease_token: str) -> None:
        self._client = client
        self._base = f"/attempts/{attempt_id}/caches"
        self._token = lease_token

    def _post(self, path: str, body: Any) -> Any:
        return self._client.cache_call(
            "POST", self._base + path, lease_token=self._token, json=body.model_dump(mode="json")
        )

    def lookup(self, caches: list[wire.CacheKeyIn]) -> wire.LookupOut:
        return wire.LookupOut.model_validate(self._post("/lookup", wire.LookupIn(caches=caches)))

    def reserve(self, body: wire.ReserveIn) -> wire.ReserveOut:
        return wire.ReserveOut.model_validate(self._post("/reserve", body))

    def uploading(self, entry_id: str, digest: str, size_bytes: int) -> None:
        self._post(f"/entries/{entry_id}/uploading", wire.CommitIn(digest=digest, size_bytes=size_bytes))

    def commit(self, entry_id: str, digest: str, size_bytes: int) -> wire.CommitOut:
        body = wire.CommitIn(digest=digest, size_bytes=size_bytes)
        return wire.CommitOut.model_validate(self._post(f"/entries/{entry_id}/commit", body))

    def fail(self, entry_id: str, reason: str) -> None:
        self._post(f"/entries/{entry_id}/fail", wire.FailIn(reason=reason[:2000]))

    def corrupt(self, entry_id: str, name: str, reason: str) -> wire.CorruptOut:
        body = wire.CorruptIn(name=name, reason=reason[:2000])
        return wire.CorruptOut.model_validate(self._post(f"/entries/{entry_id}/corrupt", body))


class UserCaches:
    """What a user (the CLI) asks about a tenant's caches."""

    def __init__(self, client: ControlPlaneClient, tenant: str) -> None:
        self._client = client
        self._tenant = tenant

    def list(
        self, *, repo: str | None = None, name: str | None = None, scope: str | None = None
    ) -> wire.CacheListOut:
        params = {"tenant": self._tenant, "repo": repo, "name": name, "scope": scope}
        answer = self._client.cache_call("GET", "/caches", params={k: v for k, v in params.items() if v})
        return wire.CacheListOut.model_validate(answer)

    def explain(
        self, job: str, cache: str, *, repo: str | None = None, run_id: str | None = None
    ) -> wire.ExplainOut:
        params = {"tenant": self._tenant, "job": job, "cache": cache, "repo": repo, "run_id": run_id}
        answer = self._client.cache_call(
            "GET", "/caches/explain", params={k: v for k, v in params.items() if v}
        )
        return wire.ExplainOut.model_validate(answer)

    def remove(self, body: wire.RemoveIn) -> wire.RemoveOut:
        answer = self._client.cache_call(
            "POST", "/caches/remove", params={"tenant": self._tenant}, json=body.model_dump(mode="json")
        )
        return wire.RemoveOut.model_validate(answer)
