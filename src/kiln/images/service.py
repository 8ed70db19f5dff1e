"""The control plane's layer records: lookup, claim, publish and abandon, over the shared entries.

Layers are rows of ``entries`` (kind ``layer``) under the commit protocol of
:mod:`kiln.metadata.entries`:

- **tenant-wide**: a layer key already covers everything that can change the layer, so a layer
  built for one repository serves every repository of the tenant (one Debian base for all). It
  never crosses tenants;
- **trust**: a layer is committed per trust tier (identity ``layer:<tier>:<key>``) and read only by
  builds of that tier or a less trusted one (:meth:`TrustTier.may_read_from`): a fork's pull
  request can never place a layer the default branch then runs on;
- **one build per key**: a claim while another live attempt holds an open claim on the same key
  answers ``busy``; the second builder waits and then finds the first one's layer.

Runners reach this through :mod:`kiln.api.routes.images` with their lease token; the CLI's own
builds (``kiln images build``) through :class:`PlaneLayerStore`, in the same process.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from kiln.errors import Conflict, IntegrityError, NotFound, StorageUnavailable
from kiln.images import wire
from kiln.images.capture import LayerBlob
from kiln.images.store import Claim, LayerRecord, publish_body, record_of
from kiln.metadata import attempts, entries, jobs, leases, runs, uploads
from kiln.metadata.db import Database
from kiln.metadata.entries import EntryRecord
from kiln.scheduler.attempt_states import AttemptState
from kiln.scheduler.trust import TrustTier
from kiln.scheduler.views import run_context_of
from kiln.storage import BlobStore

__all__ = ["KIND", "LayerScope", "LayerService", "PlaneLayerStore", "identity_of"]

logger = logging.getLogger(__name__)

KIND = "layer"
SCOPE = "images"
_SEARCH_LIMIT = 50


def identity_of(tier: str, key: str) -> str:
    """What the create-only commit keeps unique: one committed layer per key and trust tier."""
    return f"layer:{tier}:{key}"


@dataclass(frozen=True)
class LayerScope:
    """Who reads and writes layers: a tenant, the repository (for the record), a trust tier."""

    tenant: str
    repo: str
    tier: TrustTier
    run_id: str | None = None
    job: str | None = None
    attempt_id: str | None = None


def layer_out(entry: EntryRecord) -> wire.LayerOut:
    meta = entry.meta
    return wire.LayerOut(
        entry_id=entry.entry_id,
        key=entry.key,
        diff_id=str(meta.get("diff_id", "")),
        digest=entry.digest or "",
        size_bytes=entry.size_bytes or 0,
        media_type=str(meta.get("media_type", "")),
        trust_tier=entry.trust_tier,
        unpacked_bytes=int(meta.get("unpacked_bytes") or 0),
        image=meta.get("image"),
        step=meta.get("step"),
        committed_at=entry.committed_at,
        last_used_at=entry.last_used_at,
        meta={k: v for k, v in meta.items() if k in ("config",)},
    )


def _readable(tier: TrustTier, entry: EntryRecord) -> bool:
    try:
        return tier.may_read_from(TrustTier(entry.trust_tier))
    except ValueError:
        return False  # an unknown tier is trusted least of all


class LayerService:
    """Layer records over the metadata database and the blob store."""

    def __init__(self, db: Database, blobs: BlobStore, *, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._blobs = blobs
        self._clock = clock

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), tz=UTC)

    @contextmanager
    def attempt_scope(self, attempt_id: str, lease_token: str) -> Iterator[tuple[Session, LayerScope]]:
        """A write session and the scope of the attempt the token holds (its run decides)."""
        with self._db.session() as session:
            attempt = leases.hold_lease(session, attempt_id, lease_token, running=AttemptState.RUNNING)
            run = runs.get_run(session, attempt.run_id)
            job = jobs.get_job(session, attempt.job_id)
            if run is None or job is None:
                raise NotFound(f"attempt {attempt_id} has no run or job")
            ctx = run_context_of(run)
            yield session, LayerScope(ctx.tenant, ctx.repo, ctx.trust_tier, run.run_id, job.name, attempt_id)

    @contextmanager
    def local_scope(self, scope: LayerScope) -> Iterator[tuple[Session, LayerScope]]:
        """A write session for a build outside any attempt (the CLI's)."""
        with self._db.session() as session:
            runs.get_or_create_tenant(session, scope.tenant)
            yield session, scope

    # -- reading -----------------------------------------------------------------------------------

    def _best(self, session: Session, scope: LayerScope, key: str) -> EntryRecord | None:
        found = entries.search(session, tenant=scope.tenant, kind=KIND, key=key, limit=_SEARCH_LIMIT)
        usable = [e for e in found if _readable(scope.tier, e)]
        # The most trusted writer first, then the newest (search's own order).
        usable.sort(key=lambda e: TrustTier(e.trust_tier).rank)
        return usable[0] if usable else None

    def lookup(self, session: Session, scope: LayerScope, keys: list[str]) -> wire.LookupOut:
        """The committed layer of each key this scope may use (keys without one are left out)."""
        found: dict[str, wire.LayerOut] = {}
        now = self._now()
        for key in dict.fromkeys(keys):
            best = self._best(session, scope, key)
            if best is not None:
                entries.touch(session, best.entry_id, at=now)
                found[key] = layer_out(best)
        return wire.LookupOut(layers=found)

    def list_layers(self, tenant: str, *, image: str | None = None, limit: int = 1000) -> wire.LayerListOut:
        """A tenant's committed layers, newest first."""
        with self._db.read_session() as session:
            found = entries.search(session, tenant=tenant, kind=KIND, name=image, limit=limit)
        return wire.LayerListOut(layers=[layer_out(e) for e in found])

    # -- writing -----------------------------------------------------------------------------------

    def claim(self, session: Session, scope: LayerScope, body: wire.ClaimIn) -> wire.ClaimOut:
        """Claim the build of a key (see the module docstring for ``busy``)."""
        best = self._best(session, scope, body.key)
        if best is not None:
            return wire.ClaimOut(outcome="committed", layer=layer_out(best))
        identity = identity_of(scope.tier.value, body.key)
        holder = self._live_holder(session, scope, body.key, identity)
        if holder is not None:
            return wire.ClaimOut(outcome="busy", holder=holder)
        entry = entries.reserve(
            session,
            tenant=scope.tenant,
            repo=scope.repo,
            scope=SCOPE,
            kind=KIND,
            name=body.image,
            key=body.key,
            identity=identity,
            trust_tier=scope.tier.value,
            at=self._now(),
            producer_run_id=scope.run_id,
            producer_job=scope.job,
            producer_attempt_id=scope.attempt_id,
            meta={"image": body.image, "document": body.document},
        )
        return wire.ClaimOut(outcome="claimed", entry_id=entry.entry_id)

    def _live_holder(self, session: Session, scope: LayerScope, key: str, identity: str) -> str | None:
        """Who is building this key now: an open claim whose attempt still runs."""
        open_claims = entries.search(
            session,
            tenant=scope.tenant,
            kind=KIND,
            key=key,
            statuses=(entries.PENDING, entries.UPLOADING),
            limit=_SEARCH_LIMIT,
        )
        for claim in open_claims:
            if claim.identity != identity or claim.producer_attempt_id in (None, scope.attempt_id):
                continue
            attempt = attempts.get_attempt(session, claim.producer_attempt_id)
            if attempt is not None and attempt.status == AttemptState.RUNNING:
                return f"job {claim.producer_job!r} of run {claim.producer_run_id}"
        return None

    def _own(self, session: Session, scope: LayerScope, entry_id: str) -> EntryRecord:
        entry = entries.get(session, entry_id)
        if (
            entry.kind != KIND
            or entry.producer_attempt_id != scope.attempt_id
            or entry.tenant != scope.tenant
        ):
            raise NotFound(f"no layer claim {entry_id} of this build")
        return entry

    def publish(
        self, session: Session, scope: LayerScope, entry_id: str, body: wire.PublishIn
    ) -> wire.LayerOut:
        """Commit a claimed layer create-only, once its blob is stored with the size claimed."""
        self._own(session, scope, entry_id)
        try:
            stored = self._blobs.stat(body.digest)
        except StorageUnavailable as exc:
            raise Conflict(
                f"blob {body.digest} of layer claim {entry_id} is not stored: {exc.message}"
            ) from exc
        if stored != body.size_bytes:
            raise IntegrityError(f"blob {body.digest} holds {stored} bytes, not {body.size_bytes}")
        # A runner's layer must be bytes its tenant uploaded or proved: a digest learned elsewhere
        # must not become a layer that opens another tenant's blob. (A local build, without an
        # attempt, wrote the blob itself through the plane's own store.)
        if scope.attempt_id is not None and not uploads.attempt_holds(session, scope.attempt_id, body.digest):
            raise Conflict(
                f"blob {body.digest} of layer claim {entry_id} was not uploaded (or proven) by this tenant"
            )
        entries.mark_uploading(session, entry_id, digest=body.digest, size_bytes=body.size_bytes)
        meta = {
            **body.meta,
            "diff_id": body.diff_id,
            "media_type": body.media_type,
            "unpacked_bytes": body.unpacked_bytes,
        }
        result = entries.commit(
            session,
            entry_id,
            digest=body.digest,
            size_bytes=body.size_bytes,
            at=self._now(),
            compression="zstd",
            meta=meta,
        )
        logger.info(
            "Layer %s %s.",
            entry_id,
            "committed" if result.won else "lost its commit race",
            extra={"action": "layer_commit", "entry_id": entry_id, "attempt_id": scope.attempt_id},
        )
        return layer_out(result.entry)

    def abandon(self, session: Session, scope: LayerScope, entry_id: str, reason: str) -> None:
        """Give up a claim: the build failed, and nothing of it is ever committed."""
        self._own(session, scope, entry_id)
        entries.fail(session, entry_id, reason)


class PlaneLayerStore:
    """:class:`~kiln.images.store.LayerStore` for builds made by the control plane's own process (the CLI)."""

    def __init__(self, service: LayerService, blobs: BlobStore, scope: LayerScope) -> None:
        self._service = service
        self._blobs = blobs
        self._scope = scope

    @property
    def trust_tier(self) -> str:
        return self._scope.tier.value

    def lookup(self, key: str) -> LayerRecord | None:
        with self._service.local_scope(self._scope) as (session, scope):
            found = self._service.lookup(session, scope, [key]).layers.get(key)
        return record_of(found) if found else None

    def claim(self, key: str, document: dict[str, Any], *, image: str) -> Claim:
        with self._service.local_scope(self._scope) as (session, scope):
            answer = self._service.claim(
                session, scope, wire.ClaimIn(key=key, document=document, image=image)
            )
        record = record_of(answer.layer) if answer.layer else None
        return Claim(answer.outcome, answer.entry_id, record, answer.holder)

    def publish(self, entry_id: str, blob: LayerBlob, *, meta: dict[str, Any]) -> LayerRecord:
        self._blobs.put(blob.digest, blob.path, blob.size_bytes)
        body = publish_body(blob, meta)
        with self._service.local_scope(self._scope) as (session, scope):
            return record_of(self._service.publish(session, scope, entry_id, body))

    def abandon(self, entry_id: str, reason: str) -> None:
        with self._service.local_scope(self._scope) as (session, scope):
            self._service.abandon(session, scope, entry_id, reason)

    def download(self, digest: str, dest: Path) -> None:
        tmp = dest.with_name(f".{dest.name}.part")
        try:
            with self._blobs.open(digest) as reader, open(tmp, "wb") as out:
                while chunk := reader.read(1 << 20):
                    out.write(chunk)
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
