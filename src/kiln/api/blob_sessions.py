"""The control plane's half of blob transfers by runners: upload sessions and per-object grants.

Runners hold no storage credentials. For an upload the control plane checks whether the blob is
already stored (then nothing is uploaded: at once when the tenant holds it already, after a proof
of possession when only another tenant does, see :mod:`kiln.storage.possession`), or opens, or
resumes, a session: the store's multipart upload and a row in ``upload_sessions``. It hands out
short-lived grants, one per part (or one PUT for a small blob), calls CompleteMultipartUpload
itself and checks the stored size. For a download it grants a GET of one blob the attempt's tenant
holds.

Every call carries the attempt's lease token and is fenced like the runner's other calls: a token
that does not hold the attempt's lease gets ``LeaseLost`` (409). Storage calls are made outside
database transactions (SQLite's write lock must not wait on the network); the lease is checked
again in the transaction that records their result.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session

from kiln.errors import (
    BlobNotFound,
    Conflict,
    DigestMismatch,
    IntegrityError,
    NotFound,
    StorageUnavailable,
    UploadNotFound,
    UsageError,
)
from kiln.metadata import uploads
from kiln.metadata.db import Database
from kiln.metadata.leases import hold_lease
from kiln.scheduler.attempt_states import AttemptState
from kiln.storage import BlobStore, PartEntry, WriteOutcome, possession
from kiln.storage.base import GrantMethod
from kiln.storage.policy import BlobPolicy

__all__ = ["GRANT_MOUNT", "PROVE", "BlobSessions", "Granted", "Started", "challenge_of"]

#: Where the control plane serves HMAC grants (file backend); relative grant URLs live below it.
GRANT_MOUNT = "/v1/grant"
#: Part grants handed out with a session; the holder asks for more as it goes.
FIRST_GRANTS = 64
#: The outcome of a Complete that needs a proof of possession before it counts.
PROVE = "prove"


@dataclass(frozen=True)
class Granted:
    url: str
    headers: dict[str, str]
    expires_in_s: float


@dataclass(frozen=True)
class Started:
    exists: bool
    session: uploads.UploadSessionRecord | None = None
    resumed: bool = False
    parts: list[PartEntry] = field(default_factory=list)
    grants: dict[int, Granted] = field(default_factory=dict)
    put: Granted | None = None
    challenge: str | None = None  # stored, not the tenant's: start again with a proof for this


class BlobSessions:
    """Upload sessions and grants over the metadata database and the blob store.

    Parameters
    ----------
    db, store
        The metadata database and the blob store.
    policy
        Grant and session lifetimes, and the part plan.
    clock
        Unix seconds (session leases and timestamps).
    """

    def __init__(
        self,
        db: Database,
        store: BlobStore,
        policy: BlobPolicy | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._db = db
        self._store = store
        self.policy = policy or BlobPolicy()
        self._clock = clock

    # -- uploads -----------------------------------------------------------------------------------

    def start(
        self,
        attempt_id: str,
        token: str,
        digest: str,
        size_bytes: int,
        resume_upload_id: str | None,
        proof: str | None = None,
    ) -> Started:
        """Answer "already stored", or open a session (resuming ``resume_upload_id`` when it is still open).

        A blob that is stored but that the tenant does not hold yet is "already stored" only with a
        ``proof`` of possession; without one the answer is a challenge (and neither the stored size
        nor anything else about the blob).

        Raises
        ------
        LeaseLost
            ``token`` does not hold the attempt's lease.
        IntegrityError
            The blob is stored with another size (its bytes cannot be this digest).
        DigestMismatch
            ``proof`` is not the proof of the stored blob's bytes.
        """
        with self._held(attempt_id, token) as (session, scope):
            resume = uploads.find_open_by_upload_id(session, resume_upload_id) if resume_upload_id else None
            holds = uploads.tenant_may_read(session, tenant_id=scope.tenant_id, digest=digest)
        if resume is not None and (
            resume.tenant_id != scope.tenant_id or resume.digest != digest or resume.size_bytes != size_bytes
        ):
            resume = None  # not this blob's, or not this tenant's: never resumed

        stored = self._stored_size(digest)
        if stored is not None:
            if not holds:
                if proof is None:
                    return Started(exists=False, challenge=_challenge(attempt_id))
                self._check_proof(digest, attempt_id, proof)
            if stored != size_bytes:
                raise IntegrityError(f"blob {digest} is stored with {stored} bytes, not {size_bytes}")
            if resume is not None and resume.upload_id is not None:
                self._store.abort_upload(resume.upload_id)
            with self._held(attempt_id, token) as (session, _):
                if resume is not None:
                    with contextlib.suppress(Conflict):
                        uploads.finish(session, resume.session_id, state=uploads.ABORTED, at=self._now())
                uploads.record_existing(
                    session,
                    tenant_id=scope.tenant_id,
                    digest=digest,
                    size_bytes=size_bytes,
                    attempt_id=attempt_id,
                    at=self._now(),
                )
            return Started(exists=True)

        listed: list[PartEntry] = []
        stale: uploads.UploadSessionRecord | None = None
        if resume is not None and resume.upload_id is not None:
            try:
                listed = self._store.list_parts(resume.upload_id)
            except UploadNotFound:
                stale, resume = resume, None  # completed or aborted behind the session's back
        created: str | None = None
        part_size: int | None = None
        if resume is None and size_bytes > self.policy.transfer.multipart_threshold_bytes:
            part_size = self.policy.transfer.part_size_for(size_bytes)
            created = self._store.create_upload(digest, size_bytes, part_size)
        try:
            with self._held(attempt_id, token) as (session, _):
                now = self._now()
                if stale is not None:
                    with contextlib.suppress(Conflict):
                        uploads.finish(session, stale.session_id, state=uploads.ABORTED, at=now)
                if resume is not None:
                    try:
                        record = uploads.hold(
                            session,
                            resume.session_id,
                            attempt_id=attempt_id,
                            at=now,
                            lease_expires_at=self._lease_end(now),
                            take_over=True,
                        )
                    except Conflict:
                        # The janitor ended it between our look and now. Transient (503): the
                        # client asks again and gets a fresh session.
                        raise StorageUnavailable(
                            f"upload session {resume.session_id} ended while it was being resumed; try again"
                        ) from None
                else:
                    record = uploads.open_session(
                        session,
                        tenant_id=scope.tenant_id,
                        digest=digest,
                        size_bytes=size_bytes,
                        upload_id=created,
                        part_size=part_size,
                        attempt_id=attempt_id,
                        at=now,
                        lease_expires_at=self._lease_end(now),
                    )
        except BaseException:
            if created is not None:
                self._store.abort_upload(created)  # nobody will ever know of it
            raise

        if record.upload_id is None:
            return Started(exists=False, session=record, put=self._blob_grant(digest, "PUT"))
        have = {part.part_number for part in listed}
        missing = [n for n in range(1, _parts_total(record) + 1) if n not in have][:FIRST_GRANTS]
        return Started(
            exists=False,
            session=record,
            resumed=resume is not None,
            parts=listed,
            grants={n: self._part_grant(record.upload_id, n) for n in missing},
        )

    def grants(
        self, attempt_id: str, token: str, session_id: str, part_numbers: Sequence[int]
    ) -> tuple[dict[int, Granted], Granted | None]:
        """Fresh grants for parts of the session (or its PUT grant); extends the session's lease."""
        with self._held(attempt_id, token) as (session, _):
            now = self._now()
            record = uploads.hold(
                session, session_id, attempt_id=attempt_id, at=now, lease_expires_at=self._lease_end(now)
            )
        if record.upload_id is None:
            return {}, self._blob_grant(record.digest, "PUT")
        total = _parts_total(record)
        bad = [n for n in part_numbers if not 1 <= n <= total]
        if bad:
            raise UsageError(f"upload session {session_id} has parts 1..{total}, not {bad[:5]}")
        return {n: self._part_grant(record.upload_id, n) for n in part_numbers}, None

    def complete(
        self,
        attempt_id: str,
        token: str,
        session_id: str,
        parts: Sequence[PartEntry] | None,
        *,
        existed: bool,
        proof: str | None = None,
    ) -> tuple[str, int]:
        """Complete the session's upload and check the stored blob; return ``(outcome, size)``.

        Repeating a completed session's Complete answers the same (a retried request). When another
        writer stored the blob first and the tenant does not hold it, the session stays open and
        the outcome is ``prove``: complete again with the proof for :func:`challenge_of` (the
        bytes this upload sent were not kept, so nothing else shows it had them).
        """
        with self._held(attempt_id, token) as (session, scope):
            record = self._own_session(session, session_id, attempt_id)
            holds = uploads.tenant_may_read(session, tenant_id=scope.tenant_id, digest=record.digest)
        if record.state == uploads.COMPLETED:
            return record.outcome or uploads.CREATED, record.size_bytes
        if record.state == uploads.ABORTED:
            raise UploadNotFound(f"upload session {session_id} of {record.digest} was aborted")

        if record.upload_id is not None:
            if parts is None:
                raise UsageError(f"upload session {session_id} is a multipart upload: name its parts")
            _check_parts(record, parts)
            # Handles a lost Complete answer (NoSuchUpload: the blob there with this size) and a
            # concurrent writer of the same blob (EXISTED) inside the store.
            written = self._store.complete_upload(record.upload_id, parts)
            outcome = uploads.EXISTED if written is WriteOutcome.EXISTED else uploads.CREATED
        else:
            outcome = uploads.EXISTED if existed else uploads.CREATED
            if outcome == uploads.CREATED and not self._store.capabilities.server_verifies_sha256:
                self._verify_put(record.digest)
        stored = self._stored_size(record.digest)
        if stored is None:
            raise BlobNotFound(
                f"blob {record.digest} is not stored: the upload of session {session_id} did not land"
            )
        if stored != record.size_bytes:
            raise IntegrityError(
                f"blob {record.digest} is stored with {stored} bytes, not {record.size_bytes}"
            )
        if outcome == uploads.EXISTED and not holds:
            if proof is None:
                return PROVE, record.size_bytes
            self._check_proof(record.digest, attempt_id, proof)
        with self._held(attempt_id, token) as (session, _):
            uploads.finish(session, session_id, state=uploads.COMPLETED, outcome=outcome, at=self._now())
        return outcome, record.size_bytes

    def abort(self, attempt_id: str, token: str, session_id: str) -> None:
        """Abort the session and its multipart upload; an ended session is left as it is."""
        with self._held(attempt_id, token) as (session, _):
            record = self._own_session(session, session_id, attempt_id)
        if record.state != uploads.OPEN:
            return
        if record.upload_id is not None:
            self._store.abort_upload(record.upload_id)
        with self._held(attempt_id, token) as (session, _), contextlib.suppress(Conflict):
            uploads.finish(session, session_id, state=uploads.ABORTED, at=self._now())

    # -- downloads ---------------------------------------------------------------------------------

    def download(self, attempt_id: str, token: str, digest: str) -> tuple[int, Granted]:
        """Grant a GET of one blob that the attempt's tenant references; return ``(size, grant)``.

        Raises
        ------
        BlobNotFound
            The blob is not stored, or the tenant has no entry, upload or source that holds it
            (the answer is the same, so it does not tell whether another tenant has the blob).
        """
        with self._held(attempt_id, token) as (session, scope):
            allowed = uploads.tenant_may_read(session, tenant_id=scope.tenant_id, digest=digest)
        if not allowed:
            raise BlobNotFound(f"no blob {digest} for tenant {scope.tenant!r}")
        size = self._store.stat(digest)
        return size, self._blob_grant(digest, "GET")

    # -- for the grant endpoints -------------------------------------------------------------------

    def open_session_of_upload(self, upload_id: str) -> uploads.UploadSessionRecord:
        """The open session of a multipart upload, for the part endpoint; UploadNotFound otherwise."""
        with self._db.read_session() as session:
            record = uploads.find_open_by_upload_id(session, upload_id)
        if record is None:
            raise UploadNotFound(f"no open upload session for upload {upload_id}")
        return record

    # -- internals ---------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _held(self, attempt_id: str, token: str) -> Iterator[tuple[Session, uploads.AttemptScope]]:
        with self._db.session() as session:
            hold_lease(session, attempt_id, token, running=AttemptState.RUNNING)
            yield session, uploads.attempt_scope(session, attempt_id)

    @staticmethod
    def _own_session(session: Session, session_id: str, attempt_id: str) -> uploads.UploadSessionRecord:
        try:
            record = uploads.get(session, session_id)
        except NotFound:
            raise UploadNotFound(f"no upload session {session_id}") from None
        if record.held_by != attempt_id:
            raise Conflict(
                f"upload session {session_id} is held by attempt {record.held_by}, not {attempt_id}"
            )
        return record

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    def _lease_end(self, now: datetime) -> datetime:
        return now + timedelta(seconds=self.policy.upload_lease_s)

    def _stored_size(self, digest: str) -> int | None:
        try:
            return self._store.stat(digest)
        except BlobNotFound:
            return None

    def _check_proof(self, digest: str, attempt_id: str, proof: str) -> None:
        """Read the stored blob (verified) and check ``proof`` against it; DigestMismatch if wrong."""
        hasher = possession.proof_hasher(_challenge(attempt_id))
        with self._store.open(digest) as reader:
            while chunk := reader.read(1024 * 1024):
                hasher.update(chunk)
        if not possession.proofs_match(hasher.hexdigest(), proof):
            raise DigestMismatch(f"the proof of possession of {digest} does not match the stored blob")

    def _verify_put(self, digest: str) -> None:
        """Read back a blob PUT through a grant to a server that does not check sha256 itself.

        Without this, a grant holder could store other bytes under the digest, and every later
        upload of the real blob would find it "already stored". Only single puts come here (small
        blobs); readers verify every blob again anyway.
        """
        try:
            with self._store.open(digest) as reader:
                while reader.read(1024 * 1024):
                    pass
        except DigestMismatch:
            self._store.delete(digest)
            raise

    def _blob_grant(self, digest: str, method: GrantMethod) -> Granted:
        ttl = self.policy.grant_ttl_s
        url = self._store.grant_url(digest, method, ttl)
        return Granted(_mounted(url), dict(self._store.grant_headers(digest, method)), float(ttl))

    def _part_grant(self, upload_id: str, part_number: int) -> Granted:
        ttl = self.policy.grant_ttl_s
        return Granted(_mounted(self._store.grant_part_url(upload_id, part_number, ttl)), {}, float(ttl))


def _challenge(attempt_id: str) -> str:
    """What a proof of possession is computed for: unique to the attempt, which alone may use it."""
    return f"attempt/{attempt_id}"


def challenge_of(attempt_id: str) -> str:
    """The challenge the control plane sets an attempt (the runner is told it; tests compute it)."""
    return _challenge(attempt_id)


def _mounted(url: str) -> str:
    """An HMAC grant is a path on the control plane: put it below the grant endpoints."""
    return GRANT_MOUNT + url if url.startswith("/") else url


def _parts_total(record: uploads.UploadSessionRecord) -> int:
    assert record.part_size is not None
    return max(1, math.ceil(record.size_bytes / record.part_size))


def _check_parts(record: uploads.UploadSessionRecord, parts: Sequence[PartEntry]) -> None:
    """The parts must be exactly the session's plan: 1..n, full-size but the last, adding up to the blob."""
    assert record.part_size is not None
    total = _parts_total(record)
    numbers = [part.part_number for part in parts]
    if numbers != list(range(1, total + 1)):
        raise UsageError(f"upload session {record.session_id} completes with parts 1..{total}, in order")
    for part in parts:
        expected = min(record.part_size, record.size_bytes - (part.part_number - 1) * record.part_size)
        if part.size_bytes != expected:
            raise UsageError(
                f"part {part.part_number} of session {record.session_id} is {part.size_bytes} bytes, "
                f"not {expected}"
            )
