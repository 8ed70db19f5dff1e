"""Blob uploads and downloads for a job, through grants from the control plane.

The runner holds no storage credentials. :class:`RemoteBlobs` asks the control plane for an upload
session (or learns the blob is already stored), then runs the storage layer's own
:func:`~kiln.storage.upload_file` / :func:`~kiln.storage.download_file` against a
:class:`~kiln.storage.granted.GrantedStore`: the same part plan, per-part retries with backoff, the
same verification, and the same resume. The upload journal lives in the runner's spool directory,
so a replacement process on the same machine (after a crash, or the job's next attempt) resumes
the upload and sends only the parts the server does not have.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from kiln.api.blob_models import GrantOut, PartIn, UploadCompleteIn, UploadStartIn, UploadStartOut
from kiln.errors import UsageError
from kiln.runner.client import ControlPlaneClient
from kiln.storage import (
    JsonFileJournal,
    PartEntry,
    Progress,
    TransferConfig,
    WriteOutcome,
    download_file,
    possession,
    upload_file,
)
from kiln.storage.base import GrantMethod
from kiln.storage.granted import Grant, GrantedStore

__all__ = ["BlobUpload", "RemoteBlobs"]

ProgressCallback = Callable[[Progress], None]


@dataclass(frozen=True)
class BlobUpload:
    """What :meth:`RemoteBlobs.upload` did."""

    digest: str
    size_bytes: int
    parts: int  # parts in the plan (1 for a single put, 0 if the blob existed)
    parts_sent: int  # parts this call sent
    resumed_parts: int  # parts an earlier process had sent, verified and kept
    existed: bool  # the blob was already stored (nothing sent), or another writer completed it first
    bytes_sent: int
    duration_s: float


class RemoteBlobs:
    """Move blobs for one attempt.

    Parameters
    ----------
    client
        The control-plane client.
    attempt_id, lease_token
        The attempt whose lease authorizes the transfers (a lost lease stops them: ``LeaseLost``).
    spool_dir
        Runner-local directory that outlives the attempt; the upload journal is kept below it.
    config
        Retries, concurrency and stall timeout (the part size is the control plane's choice).
    """

    def __init__(
        self,
        client: ControlPlaneClient,
        attempt_id: str,
        lease_token: str,
        spool_dir: str | os.PathLike[str],
        *,
        config: TransferConfig | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._attempt_id = attempt_id
        self._token = lease_token
        self._journal = JsonFileJournal(Path(spool_dir) / "blob-uploads")
        self._config = config or TransferConfig()
        self._clock = clock

    def upload(
        self,
        path: str | os.PathLike[str],
        *,
        digest: str,
        size: int,
        progress: ProgressCallback | None = None,
    ) -> BlobUpload:
        """Upload the spooled file ``path`` as blob ``digest`` of ``size`` bytes (resuming if journaled).

        Raises
        ------
        DigestMismatch
            The file is not ``size`` bytes or does not hash to ``digest`` (nothing is completed).
        LeaseLost
            The attempt lost its lease.
        StorageUnavailable
            A part kept failing; the upload stays resumable from the journal.
        """
        started_at = self._clock()
        record = self._journal.load(digest)
        resume = record.upload_id if record is not None and record.size_bytes == size else None
        start = self._client.start_blob_upload(
            self._attempt_id,
            self._token,
            UploadStartIn(digest=digest, size_bytes=size, resume_upload_id=resume),
        )
        if start.challenge is not None:
            # Stored by another tenant: show we have the bytes instead of sending them.
            start = self._client.start_blob_upload(
                self._attempt_id,
                self._token,
                UploadStartIn(
                    digest=digest,
                    size_bytes=size,
                    resume_upload_id=resume,
                    proof=possession.prove_file(start.challenge, path),
                ),
            )
        if start.exists or start.session_id is None:
            self._journal.delete(digest)
            return BlobUpload(digest, size, 0, 0, 0, True, 0, self._clock() - started_at)
        if start.upload_id is None:
            self._journal.delete(digest)  # a single put: nothing of an earlier upload can be reused
        issuer = _SessionGrants(
            self._client, self._attempt_id, self._token, start.session_id, digest, self._clock, path
        )
        config = self._plan(start, size)
        issued_at = self._clock()
        with GrantedStore(
            digest,
            size,
            issuer,
            upload_id=start.upload_id,
            part_size_bytes=start.part_size,
            listed_parts=[PartEntry(p.part_number, p.size_bytes, p.etag) for p in start.parts],
            grants={n: _grant(g, issued_at) for n, g in start.grants.items()},
            blob_grants={"PUT": _grant(start.put, issued_at)} if start.put is not None else None,
            base_url=self._client.base_url,
            clock=self._clock,
        ) as store:
            result = upload_file(
                store, path, digest, size, config=config, journal=self._journal, progress=progress
            )
        return BlobUpload(
            digest=digest,
            size_bytes=size,
            parts=result.parts_total,
            parts_sent=result.parts_uploaded,
            resumed_parts=result.parts_resumed,
            existed=result.existed,
            bytes_sent=result.uploaded_bytes,
            duration_s=self._clock() - started_at,
        )

    def download(
        self, digest: str, dest: str | os.PathLike[str], *, progress: ProgressCallback | None = None
    ) -> int:
        """Download blob ``digest`` to ``dest`` (streamed, verified, renamed into place); return its size.

        Raises
        ------
        BlobNotFound
            The blob is not stored, or the attempt's tenant has nothing that references it.
        DigestMismatch
            The stored bytes are not ``digest`` (nothing is left at ``dest``).
        """
        issued_at = self._clock()
        answer = self._client.blob_download_grant(self._attempt_id, self._token, digest)
        issuer = _DownloadGrants(self._client, self._attempt_id, self._token, digest, self._clock)
        with GrantedStore(
            digest,
            answer.size_bytes,
            issuer,
            stored=True,
            blob_grants={"GET": _grant(answer.grant, issued_at)},
            base_url=self._client.base_url,
            clock=self._clock,
        ) as store:
            return download_file(store, digest, dest, config=self._config, progress=progress).size_bytes

    def _plan(self, start: UploadStartOut, size: int) -> TransferConfig:
        """The transfer config that makes ``upload_file`` follow the control plane's plan."""
        if start.upload_id is None:
            return dataclasses.replace(self._config, multipart_threshold_bytes=size)
        if start.part_size is None:
            raise UsageError("the control plane opened a multipart upload without a part size")
        return dataclasses.replace(
            self._config, part_size_bytes=start.part_size, multipart_threshold_bytes=size - 1
        )


def _grant(granted: GrantOut, issued_at: float) -> Grant:
    # Counted from before the request on the runner's own clock, so clock skew cannot stretch it.
    return Grant(granted.url, dict(granted.headers), issued_at + granted.expires_in_s)


class _SessionGrants:
    """One upload session's grants and its Complete/Abort, over the control-plane client."""

    def __init__(
        self,
        client: ControlPlaneClient,
        attempt_id: str,
        token: str,
        session_id: str,
        digest: str,
        clock: Callable[[], float],
        path: str | os.PathLike[str],
    ) -> None:
        self._client = client
        self._attempt_id = attempt_id
        self._token = token
        self._session_id = session_id
        self._digest = digest
        self._clock = clock
        self._path = path  # the file being uploaded: for a proof of possession, if one is asked

    def part_grants(self, part_numbers: Sequence[int]) -> dict[int, Grant]:
        issued_at = self._clock()
        answer = self._client.blob_part_grants(
            self._attempt_id, self._token, self._session_id, list(part_numbers)
        )
        return {n: _grant(g, issued_at) for n, g in answer.grants.items()}

    def blob_grant(self, method: GrantMethod) -> Grant:
        issued_at = self._clock()
        if method == "GET":
            return _grant(
                self._client.blob_download_grant(self._attempt_id, self._token, self._digest).grant, issued_at
            )
        answer = self._client.blob_part_grants(self._attempt_id, self._token, self._session_id, [])
        if answer.put is None:
            raise UsageError(f"upload session {self._session_id} is a multipart upload: it has no PUT grant")
        return _grant(answer.put, issued_at)

    def complete(self, parts: Sequence[PartEntry] | None, *, existed: bool) -> WriteOutcome:
        body = UploadCompleteIn(
            parts=None
            if parts is None
            else [PartIn(part_number=p.part_number, size_bytes=p.size_bytes, etag=p.etag) for p in parts],
            existed=existed,
        )
        answer = self._client.complete_blob_upload(self._attempt_id, self._token, self._session_id, body)
        if answer.outcome == "prove" and answer.challenge is not None:
            # Another tenant's writer stored the blob first: our bytes were dropped, so prove them.
            body.proof = possession.prove_file(answer.challenge, self._path)
            answer = self._client.complete_blob_upload(self._attempt_id, self._token, self._session_id, body)
        return WriteOutcome(answer.outcome)

    def abort(self) -> None:
        self._client.abort_blob_upload(self._attempt_id, self._token, self._session_id)


class _DownloadGrants:
    """GET grants for one blob; a download has nothing to complete or abort."""

    def __init__(
        self, client: ControlPlaneClient, attempt_id: str, token: str, digest: str, clock: Callable[[], float]
    ) -> None:
        self._client = client
        self._attempt_id = attempt_id
        self._token = token
        self._digest = digest
        self._clock = clock

    def part_grants(self, part_numbers: Sequence[int]) -> dict[int, Grant]:
        raise UsageError("a download has no parts to grant")

    def blob_grant(self, method: GrantMethod) -> Grant:
        if method != "GET":
            raise UsageError("a download grants GET only")
        issued_at = self._clock()
        return _grant(
            self._client.blob_download_grant(self._attempt_id, self._token, self._digest).grant, issued_at
        )

    def complete(self, parts: Sequence[PartEntry] | None, *, existed: bool) -> WriteOutcome:
        raise UsageError("a download has nothing to complete")

    def abort(self) -> None:
        raise UsageError("a download has nothing to abort")
