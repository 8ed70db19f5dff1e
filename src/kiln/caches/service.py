"""The control plane's cache service: lookup, reserve and commit for runners; list, explain, remove for users.

Cache entries are rows of ``entries`` (kind ``cache``) under the commit protocol of
:mod:`kiln.metadata.entries`. This module decides what the rows mean:

- **Scope and trust come from the attempt.** A runner proves it holds an attempt's lease; the
  tenant, repository, scope and trust tier are those of the attempt's run (:mod:`.scopes`). Nothing
  the runner says about them is used.
- **Identity** (what the create-only commit makes unique): for ``build``, repository + scope + name +
  key: write-once per key, the first committer wins. For ``deps`` and ``compiler`` the content digest
  too: a cache that grew commits a new entry of the same key, and a restore takes the newest.
- **Restore order**: the exact key in the run's own scope, then its pull request's base branch, then
  the default branch; then, for ``deps`` and ``compiler`` with ``restore-keys``, the newest entry of
  the same name and version (the kiln-added inputs) in the same order. Only entries written by the
  reader's trust tier or a more trusted one are ever returned.
- **Quarantine**: a runner that finds an entry corrupt says so; the server checks the blob itself
  (digest and every archive entry) and hides the entry only if the check fails, so a runner cannot
  evict a good entry by lying.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from kiln.archive import ARCHIVE_FORMAT, UnsafeArchive
from kiln.caches import wire
from kiln.caches.archive import CachePath, inspect_archive
from kiln.caches.keys import canonical_json, differences, flatten, input_order
from kiln.caches.scopes import CacheScope, scope_of
from kiln.errors import (
    Conflict,
    DigestMismatch,
    IntegrityError,
    KilnError,
    NotFound,
    StorageUnavailable,
    UsageError,
)
from kiln.metadata import cache_lookups, entries, jobs, leases, runs, uploads
from kiln.metadata.db import Database
from kiln.metadata.entries import EntryRecord
from kiln.scheduler.attempt_states import AttemptState
from kiln.scheduler.trust import TrustTier
from kiln.scheduler.views import run_context_of
from kiln.spec.caches import Cache, sandbox_path
from kiln.storage import BlobStore

__all__ = ["KIND", "CacheService", "identity_of"]

logger = logging.getLogger(__name__)

KIND = "cache"
#: Like GitHub's seven days: long enough for weekly work, short enough that a dead branch frees space.
DEFAULT_UNUSED_TTL = timedelta(days=7)
_FALLBACK_TYPES = ("deps", "compiler")
_SEARCH_LIMIT = 200


def identity_of(repo: str, scope: str, name: str, cache_type: str, key: str, content_digest: str) -> str:
    """What the create-only commit keeps unique (see the module docstring)."""
    parts = [repo, scope, name, cache_type, key]
    if cache_type != "build":
        parts.append(content_digest)
    return "cache:" + hashlib.sha256(canonical_json(parts)).hexdigest()


def entry_out(entry: EntryRecord) -> wire.CacheEntryOut:
    """The API view of a cache entry."""
    meta = entry.meta
    return wire.CacheEntryOut(
        entry_id=entry.entry_id,
        name=entry.name,
        type=str(meta.get("type", "")),
        key=entry.key,
        scope=entry.scope,
        trust_tier=entry.trust_tier,
        digest=entry.digest,
        size_bytes=entry.size_bytes,
        unpacked_bytes=meta.get("unpacked_bytes"),
        files=meta.get("files"),
        content_digest=meta.get("content_digest"),
        paths=list(meta.get("paths", [])),
        status=entry.status,
        created_at=entry.created_at,
        committed_at=entry.committed_at,
        last_used_at=entry.last_used_at,
        producer_run_id=entry.producer_run_id,
        producer_job=entry.producer_job,
        repo=entry.repo,
    )


@dataclass(frozen=True)
class _Attempt:
    attempt_id: str
    run_id: str
    job: str
    spec: dict[str, Any]
    scope: CacheScope


class CacheService:
    """Cache entries over the metadata database and the blob store.

    Parameters
    ----------
    db
        The metadata database (migrated).
    blobs
        The blob store that holds entries' archives.
    clock
        Seconds since the epoch.
    unused_ttl
        An entry expires this long after it was saved or last restored; the janitor's retention
        pass then hides it and collects its blob.
    """

    def __init__(
        self,
        db: Database,
        blobs: BlobStore,
        *,
        clock: Callable[[], float] = time.time,
        unused_ttl: timedelta = DEFAULT_UNUSED_TTL,
    ) -> None:
        self._db = db
        self._blobs = blobs
        self._clock = clock
        self._ttl = unused_ttl

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), tz=UTC)

    @contextmanager
    def _attempt(self, attempt_id: str, lease_token: str) -> Iterator[tuple[Session, _Attempt]]:
        """A write session and the attempt the token holds; its run decides scope and trust."""
        with self._db.session() as session:
            attempt = leases.hold_lease(session, attempt_id, lease_token, running=AttemptState.RUNNING)
            run = runs.get_run(session, attempt.run_id)
            job = jobs.get_job(session, attempt.job_id)
            if run is None or job is None:
                raise NotFound(f"attempt {attempt_id} has no run or job")
            yield session, _Attempt(attempt_id, run.run_id, job.name, job.spec, scope_of(run_context_of(run)))

    @staticmethod
    def _declared(attempt: _Attempt, request: wire.CacheKeyIn) -> Cache:
        """The cache as the job's stored spec declares it; the runner may not invent or retype one."""
        for data in attempt.spec.get("caches", []):
            if data.get("name") == request.name:
                cache = Cache.model_validate(data)
                if cache.type != request.type or list(cache.paths) != list(request.paths):
                    raise UsageError(
                        f"cache {request.name!r} of job {attempt.job!r} is declared as {cache.type} "
                        f"with paths {cache.paths}, not {request.type} with {request.paths}"
                    )
                return cache
        raise UsageError(f"job {attempt.job!r} declares no cache named {request.name!r}")

    # -- runners ----------------------------------------------------------------------------------

    def lookup(self, attempt_id: str, lease_token: str, body: wire.LookupIn) -> wire.LookupOut:
        """Find the entry each cache restores (or none), and record the lookup for ``explain``."""
        now = self._now()
        results: list[wire.LookupResultOut] = []
        with self._attempt(attempt_id, lease_token) as (session, attempt):
            for request in body.caches:
                declared = self._declared(attempt, request)
                if declared.policy == "push":
                    raise UsageError(f"cache {request.name!r} has `policy: push`: it is never restored")
                restore_keys = declared.restore_keys and declared.type in _FALLBACK_TYPES
                found, outcome = self._find(session, attempt.scope, request, restore_keys=restore_keys)
                cache_lookups.record_lookup(
                    session,
                    tenant=attempt.scope.tenant,
                    repo=attempt.scope.repo,
                    run_id=attempt.run_id,
                    attempt_id=attempt_id,
                    job=attempt.job,
                    name=request.name,
                    cache_type=request.type,
                    scope=attempt.scope.own,
                    trust_tier=attempt.scope.tier.value,
                    readable_scopes=list(attempt.scope.readable),
                    key=request.key,
                    version=request.version,
                    document=request.document,
                    outcome=outcome,
                    matched_entry_id=found.entry_id if found else None,
                    at=now,
                )
                if found is not None:
                    entries.touch(session, found.entry_id, at=now)
                    cache_lookups.extend_expiry(session, found.entry_id, expires_at=now + self._ttl)
                results.append(
                    wire.LookupResultOut(
                        name=request.name, restore=outcome, entry=entry_out(found) if found else None
                    )
                )
        return wire.LookupOut(results=results)

    def _readable(
        self, session: Session, scope: CacheScope, *, name: str, cache_type: str, key: str | None = None
    ) -> list[EntryRecord]:
        found = entries.search(
            session,
            tenant=scope.tenant,
            kind=KIND,
            repo=scope.repo,
            scopes=list(scope.readable),
            name=name,
            key=key,
            limit=_SEARCH_LIMIT,
        )
        return [
            e for e in found if e.meta.get("type") == cache_type and scope.may_read(e.scope, e.trust_tier)
        ]

    def _find(
        self, session: Session, scope: CacheScope, request: wire.CacheKeyIn, *, restore_keys: bool
    ) -> tuple[EntryRecord | None, str]:
        exact = self._readable(session, scope, name=request.name, cache_type=request.type, key=request.key)
        for readable in scope.readable:
            # Newest first (entries.search's order): a grown deps or compiler cache wins.
            match = next((e for e in exact if e.scope == readable), None)
            if match is not None:
                return match, "hit"
        if not restore_keys:
            return None, "miss"
        same_version = [
            e
            for e in self._readable(session, scope, name=request.name, cache_type=request.type)
            if e.meta.get("version") == request.version
        ]
        for readable in scope.readable:
            match = next((e for e in same_version if e.scope == readable), None)
            if match is not None:
                return match, "fallback"
        return None, "miss"

    def reserve(self, attempt_id: str, lease_token: str, body: wire.ReserveIn) -> wire.ReserveOut:
        """Claim a save in the run's own scope; say when there is nothing to upload."""
        now = self._now()
        with self._attempt(attempt_id, lease_token) as (session, attempt):
            declared = self._declared(attempt, body)
            if declared.policy == "pull":
                raise UsageError(f"cache {body.name!r} has `policy: pull`: it is never saved")
            scope = attempt.scope
            identity = identity_of(scope.repo, scope.own, body.name, body.type, body.key, body.content_digest)
            existing = entries.find_committed(session, tenant=scope.tenant, kind=KIND, identity=identity)
            if existing is not None:
                outcome = "exists" if body.type == "build" else "unchanged"
                return wire.ReserveOut(outcome=outcome, existing=entry_out(existing))
            entry = entries.reserve(
                session,
                tenant=scope.tenant,
                repo=scope.repo,
                scope=scope.own,
                kind=KIND,
                name=body.name,
                key=body.key,
                identity=identity,
                trust_tier=scope.tier.value,
                at=now,
                expires_at=now + self._ttl,
                producer_run_id=attempt.run_id,
                producer_job=attempt.job,
                producer_attempt_id=attempt_id,
                meta={
                    "type": body.type,
                    "version": body.version,
                    "paths": list(body.paths),
                    "document": body.document,
                    "content_digest": body.content_digest,
                    "unpacked_bytes": body.unpacked_bytes,
                    "files": body.files,
                    "archive": ARCHIVE_FORMAT,
                    "restored_entry_id": body.restored_entry_id,
                },
            )
        return wire.ReserveOut(outcome="reserved", entry_id=entry.entry_id)

    def _own_entry(self, session: Session, attempt: _Attempt, entry_id: str) -> EntryRecord:
        entry = entries.get(session, entry_id)
        if entry.kind != KIND or entry.producer_attempt_id != attempt.attempt_id:
            raise NotFound(f"no cache entry {entry_id} reserved by attempt {attempt.attempt_id}")
        return entry

    def uploading(self, attempt_id: str, lease_token: str, entry_id: str, body: wire.CommitIn) -> None:
        """Record the blob a reserved entry will commit, before it is uploaded.

        From now on the janitor keeps that blob, even an old unreferenced copy the upload reuses.
        """
        with self._attempt(attempt_id, lease_token) as (session, attempt):
            self._own_entry(session, attempt, entry_id)
            entries.mark_uploading(session, entry_id, digest=body.digest, size_bytes=body.size_bytes)

    def commit(self, attempt_id: str, lease_token: str, entry_id: str, body: wire.CommitIn) -> wire.CommitOut:
        """Commit a reserved entry create-only, once its blob is stored with the size claimed."""
        try:
            stored = self._blobs.stat(body.digest)
        except StorageUnavailable as exc:
            raise Conflict(
                f"blob {body.digest} of cache entry {entry_id} is not stored: {exc.message}"
            ) from exc
        if stored != body.size_bytes:
            raise IntegrityError(f"blob {body.digest} holds {stored} bytes, not {body.size_bytes}")
        with self._attempt(attempt_id, lease_token) as (session, attempt):
            self._own_entry(session, attempt, entry_id)
            if not uploads.attempt_holds(session, attempt_id, body.digest):
                # A digest is not the bytes: whoever learned one must not commit, then read, the blob.
                raise Conflict(
                    f"blob {body.digest} of cache entry {entry_id} was not uploaded (or proven) "
                    "by this tenant"
                )
            result = entries.commit(
                session,
                entry_id,
                digest=body.digest,
                size_bytes=body.size_bytes,
                at=self._now(),
                compression="zstd",
            )
        logger.info(
            "Cache entry %s %s.",
            entry_id,
            "committed" if result.won else "lost its commit race",
            extra={"action": "cache_commit", "entry_id": entry_id, "attempt_id": attempt_id},
        )
        return wire.CommitOut(save="saved" if result.won else "lost-race", entry=entry_out(result.entry))

    def fail(self, attempt_id: str, lease_token: str, entry_id: str, reason: str) -> None:
        """Give up a reserved entry (the upload failed, the job was cancelled)."""
        with self._attempt(attempt_id, lease_token) as (session, attempt):
            self._own_entry(session, attempt, entry_id)
            entries.fail(session, entry_id, reason)

    def report_corrupt(
        self, attempt_id: str, lease_token: str, entry_id: str, body: wire.CorruptIn
    ) -> wire.CorruptOut:
        """A runner could not restore an entry: check it here and quarantine it if it really is bad."""
        with self._attempt(attempt_id, lease_token) as (session, attempt):
            entry = entries.get(session, entry_id)
            if entry.kind != KIND or not attempt.scope.may_read(entry.scope, entry.trust_tier):
                raise NotFound(f"no cache entry {entry_id} readable by attempt {attempt_id}")
            cache_lookups.set_outcome(session, attempt_id=attempt_id, name=body.name, outcome="corrupt")
        problem, damaged = self._verify(entry)
        if problem is None:
            return wire.CorruptOut(
                quarantined=False,
                message=f"entry {entry_id} verified on the server; the runner's copy was damaged on the way",
            )
        with self._db.session() as session:
            entries.set_status(session, [entry_id], entries.DELETED, reason=f"quarantined: {problem}")
        if damaged and entry.digest is not None:
            # The bytes at this address are not the blob it names: remove them, so that the next
            # save of the same content uploads it again instead of finding "already stored".
            self._blobs.delete(entry.digest)
        logger.warning(
            "Cache entry %s quarantined: %s",
            entry_id,
            problem,
            extra={"action": "cache_quarantined", "entry_id": entry_id, "attempt_id": attempt_id},
        )
        return wire.CorruptOut(quarantined=True, message=f"entry {entry_id} quarantined: {problem}")

    def _verify(self, entry: EntryRecord) -> tuple[str | None, bool]:
        """``(problem, damaged)``: no problem if the blob is whole and passes the restore's checks;
        ``damaged`` if the stored bytes are not the blob their digest names (or cannot be read)."""
        if entry.digest is None:
            return "it has no blob", False
        paths = [CachePath(p, sandbox_path(p).lstrip("/")) for p in entry.meta.get("paths", [])]
        limit = int(entry.meta.get("unpacked_bytes") or 0)
        try:
            with self._blobs.open(entry.digest) as reader:
                try:
                    inspect_archive(reader, paths, max_unpacked_bytes=limit)  # type: ignore[arg-type]
                finally:
                    while reader.read(1 << 20):
                        pass  # the reader verifies the digest once the last byte is read
        except DigestMismatch as exc:
            return exc.message, True
        except (UnsafeArchive, IntegrityError) as exc:
            return exc.message, False
        except KilnError as exc:
            return f"its blob cannot be read: {exc.message}", True
        return None, False

    # -- users ------------------------------------------------------------------------------------

    def list_entries(
        self,
        tenant: str,
        *,
        repo: str | None = None,
        name: str | None = None,
        scope: str | None = None,
        limit: int = 1000,
    ) -> wire.CacheListOut:
        """Committed cache entries of a tenant, newest first."""
        with self._db.read_session() as session:
            found = entries.search(
                session,
                tenant=tenant,
                kind=KIND,
                repo=repo,
                scopes=[scope] if scope else None,
                name=name,
                limit=limit,
            )
        return wire.CacheListOut(entries=[entry_out(e) for e in found])

    def remove(self, tenant: str, body: wire.RemoveIn) -> wire.RemoveOut:
        """Delete entries by id, or all that match the filters; their blobs go to the janitor."""
        if not (body.entry_ids or body.repo or body.name or body.scope or body.all):
            raise UsageError("name entries to remove, or filters (repo, name, scope), or ask for all")
        with self._db.session() as session:
            if body.entry_ids:
                found = [entries.get(session, i) for i in body.entry_ids]
                chosen = [e for e in found if e.tenant == tenant and e.kind == KIND]
                if len(chosen) != len(found):
                    raise NotFound("some of the entries are not cache entries of this tenant")
            else:
                chosen = entries.search(
                    session,
                    tenant=tenant,
                    kind=KIND,
                    repo=body.repo,
                    scopes=[body.scope] if body.scope else None,
                    name=body.name,
                    limit=100_000,
                )
            removed = entries.set_status(
                session, [e.entry_id for e in chosen], entries.DELETED, reason="removed"
            )
        return wire.RemoveOut(removed=removed)

    def explain(
        self, tenant: str, job: str, cache: str, *, repo: str | None = None, run_id: str | None = None
    ) -> wire.ExplainOut:
        """The inputs of a job's last lookup of a cache, against the nearest entry: why did it miss?"""
        with self._db.read_session() as session:
            lookup = cache_lookups.latest_lookup(
                session, tenant=tenant, job=job, name=cache, repo=repo, run_id=run_id
            )
            if lookup is None:
                where = f" in run {run_id}" if run_id else ""
                raise NotFound(f"job {job!r} has not looked up a cache named {cache!r}{where}")
            candidates = entries.search(
                session, tenant=tenant, kind=KIND, repo=lookup.repo, name=cache, limit=_SEARCH_LIMIT
            )
            matched = entries.get(session, lookup.matched_entry_id) if lookup.matched_entry_id else None
        return _explain(lookup, candidates, matched)


def _explain(
    lookup: cache_lookups.LookupRecord, candidates: list[EntryRecord], matched: EntryRecord | None
) -> wire.ExplainOut:
    readable = set(lookup.readable_scopes)
    reader = scope_of_lookup(lookup)
    # Only what existed when the job looked: its own save (after the lookup) explains nothing.
    same_type = [
        e
        for e in candidates
        if e.meta.get("type") == lookup.cache_type and (e.committed_at or e.created_at) <= lookup.created_at
    ]
    visible = [e for e in same_type if reader.may_read(e.scope, e.trust_tier)]
    notes: list[str] = []
    for e in same_type:
        if e.key == lookup.key and e not in visible:
            why = (
                f"written by a {e.trust_tier} run, and a {lookup.trust_tier} run never restores a lower tier"
                if e.scope in readable
                else f"scope {e.scope} is not one this run reads ({', '.join(lookup.readable_scopes)})"
            )
            notes.append(f"entry {e.entry_id} has this exact key but cannot be restored: {why}")
    ranked = sorted(
        visible,
        key=lambda e: (
            len(differences(lookup.document, e.meta.get("document") or {})),
            -e.created_at.timestamp(),
        ),
    )
    nearest = matched or (ranked[0] if ranked else None)
    ours = flatten(lookup.document)
    theirs = flatten(nearest.meta.get("document") or {}) if nearest else {}
    names = sorted(ours.keys() | theirs.keys(), key=input_order)
    inputs = [
        wire.ExplainInputOut(
            name=n,
            value=ours.get(n),
            nearest=theirs.get(n) if nearest else None,
            differs=bool(nearest) and ours.get(n) != theirs.get(n),
        )
        for n in names
    ]
    if nearest is None:
        notes.append("no entry of this cache can be restored by this run")
    elif lookup.outcome == "fallback":
        notes.append(
            "restored by `restore-keys` from the newest entry with the same image, platform, type and paths"
        )
    elif lookup.outcome == "corrupt":
        notes.append("the matched entry failed verification and was not restored")
    return wire.ExplainOut(
        job=lookup.job,
        cache=lookup.name,
        type=lookup.cache_type,
        run_id=lookup.run_id,
        repo=lookup.repo,
        key=lookup.key,
        scope=lookup.scope,
        trust_tier=lookup.trust_tier,
        readable_scopes=lookup.readable_scopes,
        restore=lookup.outcome,
        matched=entry_out(matched) if matched else None,
        nearest=entry_out(nearest) if nearest else None,
        inputs=inputs,
        notes=notes,
    )


def scope_of_lookup(lookup: cache_lookups.LookupRecord) -> CacheScope:
    """The reader a lookup was made for (its scopes and tier as they were then)."""
    return CacheScope(
        tenant=lookup.tenant,
        repo=lookup.repo,
        own=lookup.scope,
        readable=tuple(lookup.readable_scopes),
        tier=TrustTier(lookup.trust_tier),
    )
