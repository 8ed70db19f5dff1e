"""A runner's :class:`~kiln.images.store.LayerStore`: layer records over HTTP, blobs by grant.

Every call carries the attempt's lease token; the control plane decides the tenant and trust tier
from the attempt's run (:mod:`kiln.api.routes.images`). Blobs move through
:class:`kiln.runner.blobs.RemoteBlobs` (resumable uploads, verified downloads): the runner holds
no storage credentials.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kiln.images import wire
from kiln.images.capture import LayerBlob
from kiln.images.store import Claim, LayerRecord, publish_body, record_of
from kiln.runner.blobs import RemoteBlobs
from kiln.runner.client import ControlPlaneClient

__all__ = ["RemoteLayerStore"]


class RemoteLayerStore:
    """Layer records and blobs of one attempt.

    Parameters
    ----------
    client
        The control-plane client.
    attempt_id, lease_token
        The attempt whose lease authorizes every call.
    trust_tier
        The attempt's run's tier (from the lease); the server applies it again on every call.
    spool_dir
        Runner-local directory for resumable uploads.
    """

    def __init__(
        self, client: ControlPlaneClient, attempt_id: str, lease_token: str, trust_tier: str, spool_dir: Path
    ) -> None:
        self._client = client
        self._token = lease_token
        self._base = f"/attempts/{attempt_id}/images/layers"
        self._tier = trust_tier
        self._blobs = RemoteBlobs(client, attempt_id, lease_token, spool_dir)

    @property
    def trust_tier(self) -> str:
        return self._tier

    def _post(self, path: str, body: Any) -> Any:
        # cache_call is the client's generic JSON call under /v1 with a lease token.
        return self._client.cache_call(
            "POST", self._base + path, lease_token=self._token, json=body.model_dump(mode="json")
        )

    def lookup(self, key: str) -> LayerRecord | None:
        answer = wire.LookupOut.model_validate(self._post("/lookup", wire.LookupIn(keys=[key])))
        found = answer.layers.get(key)
        return record_of(found) if found else None

    def claim(self, key: str, document: dict[str, Any], *, image: str) -> Claim:
        answer = wire.ClaimOut.model_validate(
            self._post("/claim", wire.ClaimIn(key=key, document=document, image=image))
        )
        return Claim(
            answer.outcome, answer.entry_id, record_of(answer.layer) if answer.layer else None, answer.holder
        )

    def publish(self, entry_id: str, blob: LayerBlob, *, meta: dict[str, Any]) -> LayerRecord:
        self._blobs.upload(blob.path, digest=blob.digest, size=blob.size_bytes)
        body = publish_body(blob, meta)
        return record_of(wire.LayerOut.model_validate(self._post(f"/{entry_id}/publish", body)))

    def abandon(self, entry_id: str, reason: str) -> None:
        self._post(f"/{entry_id}/fail", wire.FailIn(reason=reason[:2000]))

    def download(self, digest: str, dest: Path) -> None:
        self._blobs.download(digest, dest)
