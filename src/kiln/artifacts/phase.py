"""The runner's artifact phase: get what the job ``needs:`` before its steps, upload its own after.

Before the first step (this phase runs first): ask the control plane for the artifacts of every job
this one needs. Each must be ``committed``; one whose producer is still uploading is waited for,
up to a timeout. Anything else (missing, failed, expired, deleted) fails the job with a message
naming the artifact, the job that produced it and its state. Then every archive is downloaded
(digest-verified) before any is extracted, so a corrupt or missing blob leaves the workspace
untouched; each is extracted with the checks of :mod:`kiln.artifacts.extract`.

After the last step (this phase runs last): for each declared artifact whose ``when`` matches the
job's outcome, select its files, spool the archive (:mod:`kiln.artifacts.spool`), reserve it,
upload it through the blob transfer (resumable: a killed attempt's parts are kept), and finalize
it. An artifact is required output: ``if-no-files-found: error``, a link leaving the workspace or
a failed upload fails the job.

Everything is reported in the job's summary (``report["artifacts"]``) and one log line per
artifact. This module runs on the runner: it talks to the control plane over HTTP only.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from kiln.archive import UnsafeArchive
from kiln.artifacts.collect import collect
from kiln.artifacts.extract import extract_artifact
from kiln.artifacts.spool import ArtifactSpool
from kiln.artifacts.wire import ArtifactOut, ArtifactReserveIn, NeededArtifactOut
from kiln.caches.files import UnsafePath
from kiln.errors import (
    ArtifactUnavailable,
    BlobNotFound,
    DigestMismatch,
    IntegrityError,
    JobError,
    KilnError,
)
from kiln.runner.blobs import RemoteBlobs
from kiln.runner.phases import JobContext
from kiln.spec.artifacts import Artifact
from kiln.storage import Progress

__all__ = ["ArtifactsPhase", "BlobTransfer", "UploadStats", "remote_transfer"]

#: How long a job waits for a needed artifact whose producer is still uploading it.
DEFAULT_WAIT_S = 600.0
#: Uploads at least this large log their progress.
_PROGRESS_FROM_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class UploadStats:
    """What one upload did: parts in the plan, parts kept from an earlier attempt, bytes sent."""

    parts: int
    resumed_parts: int
    parts_sent: int
    sent_bytes: int
    existed: bool  # the blob was stored already: nothing was sent


class BlobTransfer(Protocol):
    """Moves archives between the runner's disk and the blob store, through per-object grants."""

    def upload(
        self, path: Path, *, digest: str, size: int, progress: Callable[[Progress], None] | None = None
    ) -> UploadStats:
        """Store the file as blob ``digest``, resuming an earlier attempt's multipart upload."""
        ...

    def download(self, digest: str, dest: Path) -> int:
        """Write blob ``digest`` to ``dest``, verified; raise DigestMismatch if it is not that blob."""
        ...


def remote_transfer(ctx: JobContext) -> BlobTransfer:
    """Blob transfer through the control plane's grants (:class:`kiln.runner.blobs.RemoteBlobs`).

    Its upload journal lives in the runner's spool, next to the spooled archives, so the next
    attempt on this machine resumes a multipart upload a killed attempt left.
    """
    blobs = RemoteBlobs(ctx.client, ctx.lease.attempt_id, ctx.lease.lease_token, ctx.spool_dir)

    class _Remote:
        def upload(
            self, path: Path, *, digest: str, size: int, progress: Callable[[Progress], None] | None = None
        ) -> UploadStats:
            result = blobs.upload(path, digest=digest, size=size, progress=progress)
            return UploadStats(
                parts=result.parts,
                resumed_parts=result.resumed_parts,
                parts_sent=result.parts_sent,
                sent_bytes=result.bytes_sent,
                existed=result.existed,
            )

        def download(self, digest: str, dest: Path) -> int:
            return blobs.download(digest, dest)

    return _Remote()


def _progress_lines(log: Callable[[str], None], name: str, size: int) -> Callable[[Progress], None] | None:
    """A progress callback that logs every tenth of a large upload (small ones say nothing)."""
    if size < _PROGRESS_FROM_BYTES:
        return None
    said = [0]

    def report(progress: Progress) -> None:
        tenth = progress.bytes_done * 10 // max(progress.bytes_total, 1)
        if tenth > said[0]:
            said[0] = tenth
            kept = " (resumed)" if progress.resumed else ""
            log(
                f"kiln: artifact {name}: uploaded {tenth * 10}% of {_mib(progress.bytes_total)} "
                f"({progress.parts_done}/{progress.parts_total} parts{kept})"
            )

    return report


def _mib(size: int | None) -> str:
    return f"{(size or 0) / 1024 / 1024:.1f} MiB"


def _short(digest: str | None) -> str:
    return (digest or "")[:19] + "…" if digest else "-"


def _wanted(artifact: Artifact, succeeded: bool) -> bool:
    return artifact.when == "always" or (artifact.when == "on-success") == succeeded


class ArtifactsPhase:
    """Downloads the artifacts a job needs and uploads the ones it declares (one object per job).

    Parameters
    ----------
    transfer
        Makes the blob transfer for a job (default: through the control plane's grants).
    wait_timeout_s
        How long to wait for a needed artifact that is still being uploaded.
    poll_s
        How often to ask again while waiting.
    clock, sleep
        Monotonic time and sleeping, injected for tests.
    """

    def __init__(
        self,
        *,
        transfer: Callable[[JobContext], BlobTransfer] = remote_transfer,
        wait_timeout_s: float = DEFAULT_WAIT_S,
        poll_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._make_transfer = transfer
        self._transfer: BlobTransfer | None = None
        self._wait_timeout_s = wait_timeout_s
        self._poll_s = poll_s
        self._clock = clock
        self._sleep = sleep
        self._report: list[dict[str, Any]] = []

    def _blobs(self, ctx: JobContext) -> BlobTransfer:
        if self._transfer is None:
            self._transfer = self._make_transfer(ctx)
        return self._transfer

    def _publish(self, ctx: JobContext) -> None:
        ctx.report["artifacts"] = list(self._report)
        ctx.client.report(ctx.lease.attempt_id, ctx.lease.lease_token, "artifacts", list(self._report))

    # -- before the steps: the artifacts this job needs -------------------------------------------

    def before_steps(self, ctx: JobContext) -> None:
        if not ctx.job.needs:
            return
        try:
            needed = self._settled(ctx)
            self._fetch(ctx, needed)
        finally:
            self._publish(ctx)

    def _settled(self, ctx: JobContext) -> list[NeededArtifactOut]:
        """The needed artifacts once none is still uploading (or the wait timed out)."""
        deadline = self._clock() + self._wait_timeout_s
        said: set[tuple[str, str]] = set()
        while True:
            needed = ctx.client.needed_artifacts(ctx.lease.attempt_id, ctx.lease.lease_token)
            uploading = [n for n in needed if n.state == "uploading"]
            if not uploading:
                break
            if self._clock() >= deadline:
                waited = self._wait_timeout_s
                first = uploading[0]
                raise ArtifactUnavailable(
                    f"artifact `{first.name}` of job `{first.job}` is still uploading after {waited:g}s "
                    f"of waiting; job `{ctx.lease.job_name}` needs it"
                )
            for item in uploading:
                if (item.job, item.name) not in said:
                    said.add((item.job, item.name))
                    ctx.log(f"kiln: artifact {item.name} of job {item.job}: waiting ({item.reason})")
            self._sleep(self._poll_s)
        problems = [n for n in needed if n.state != "committed"]
        for item in problems:
            self._report.append(
                {"name": item.name, "from_job": item.job, "direction": "download", "state": item.state}
            )
        if problems:
            messages = [
                f"artifact `{n.name}` of job `{n.job}` is {n.state}" + (f" ({n.reason})" if n.reason else "")
                for n in problems
            ]
            raise ArtifactUnavailable(f"{'; '.join(messages)}; job `{ctx.lease.job_name}` needs it")
        return needed

    def _fetch(self, ctx: JobContext, needed: list[NeededArtifactOut]) -> None:
        downloads = ctx.workspace.parent / "artifacts-in"
        downloads.mkdir(parents=True, exist_ok=True)
        fetched: list[tuple[NeededArtifactOut, ArtifactOut, Path, float]] = []
        # Every archive is downloaded and verified before anything is extracted.
        for item in needed:
            artifact = item.artifact
            assert artifact is not None and artifact.digest is not None  # committed
            dest = downloads / f"{artifact.artifact_id}.tar.zst"
            started = self._clock()
            try:
                self._blobs(ctx).download(artifact.digest, dest)
            except DigestMismatch as exc:
                raise ArtifactUnavailable(
                    f"artifact `{item.name}` of job `{item.job}` failed verification: the stored blob does "
                    f"not match its digest {artifact.digest} ({exc.message}); nothing was extracted"
                ) from exc
            except BlobNotFound as exc:
                raise ArtifactUnavailable(
                    f"artifact `{item.name}` of job `{item.job}` is committed but its blob "
                    f"{artifact.digest} is gone from storage; nothing was extracted"
                ) from exc
            fetched.append((item, artifact, dest, self._clock() - started))
        for item, artifact, dest, download_s in fetched:
            started = self._clock()
            try:
                extract_artifact(
                    dest,
                    artifact.manifest or [],
                    ctx.workspace.parent / "artifacts-staging",
                    ctx.workspace,
                    max_unpacked_bytes=max(artifact.unpacked_bytes, 1),
                    complete=not artifact.manifest_truncated,
                )
            except (UnsafeArchive, IntegrityError, UnsafePath) as exc:
                message = exc.message if isinstance(exc, KilnError) else str(exc)
                raise ArtifactUnavailable(
                    f"artifact `{item.name}` of job `{item.job}` was refused: {message}"
                ) from exc
            finally:
                dest.unlink(missing_ok=True)
            extract_s = self._clock() - started
            ctx.log(
                f"kiln: artifact {item.name} of job {item.job}: {artifact.files} files, "
                f"{_mib(artifact.size_bytes)} {_short(artifact.digest)} verified and extracted "
                f"({download_s:.2f}s download, {extract_s:.2f}s extract)"
            )
            self._report.append(
                {
                    "name": item.name,
                    "from_job": item.job,
                    "direction": "download",
                    "state": "extracted",
                    "digest": artifact.digest,
                    "size": artifact.size_bytes,
                    "files": artifact.files,
                    "download_s": round(download_s, 3),
                    "extract_s": round(extract_s, 3),
                }
            )

    # -- after the steps: the artifacts this job produces -----------------------------------------

    def after_steps(self, ctx: JobContext, *, succeeded: bool) -> None:
        if not ctx.job.artifacts:
            return
        spool = ArtifactSpool(ctx.spool_dir)
        spool.sweep()
        errors: list[str] = []
        try:
            for artifact in ctx.job.artifacts:
                if not _wanted(artifact, succeeded):
                    outcome = "succeeded" if succeeded else "failed"
                    self._report.append(
                        {
                            "name": artifact.name,
                            "direction": "upload",
                            "state": "skipped",
                            "reason": f"when: {artifact.when} and the job {outcome}",
                        }
                    )
                    continue
                error = self._upload(ctx, spool, artifact)
                if error is not None:
                    errors.append(error)
        finally:
            self._publish(ctx)
        if errors:
            raise JobError("; ".join(errors))

    def _upload(self, ctx: JobContext, spool: ArtifactSpool, artifact: Artifact) -> str | None:
        """Upload one artifact; return why it fails the job, or None."""
        lease = ctx.lease
        started = self._clock()
        found = collect(ctx.workspace, artifact.paths, artifact.exclude)
        if found.escaping_links:
            shown = ", ".join(found.escaping_links[:3])
            problem = f"symbolic links leave the workspace ({shown}); an artifact keeps links within it"
            return self._not_uploaded(ctx, artifact, problem, fatal=True)
        if not found.members:
            excluded = f" (exclude: {', '.join(artifact.exclude)})" if artifact.exclude else ""
            problem = f"no files matched {', '.join(artifact.paths)}{excluded}"
            return self._not_uploaded(ctx, artifact, problem, fatal=artifact.if_no_files_found == "error")
        spooled = spool.spool(lease.run_id, lease.job_name, artifact.name, found.members, found.manifest)
        pack_s = self._clock() - started  # selecting, hashing and packing (nothing if spooled before)
        reserved = ctx.client.reserve_artifact(
            lease.attempt_id,
            lease.lease_token,
            ArtifactReserveIn(
                name=artifact.name,
                digest=spooled.digest,
                size_bytes=spooled.size_bytes,
                files=found.files,
                unpacked_bytes=found.unpacked_bytes,
                manifest=found.manifest,
            ),
        )
        line: dict[str, Any] = {
            "name": artifact.name,
            "direction": "upload",
            "files": found.files,
            "parts": 0,
            "resumed_parts": 0,
            "parts_sent": 0,
            "reused_spool": spooled.reused,
            "pack_s": round(pack_s, 3),
        }
        if reserved.state == "committed":  # an earlier attempt of this job committed it
            same = reserved.digest == spooled.digest
            ctx.log(
                f"kiln: artifact {artifact.name}: attempt {reserved.attempt_number} committed it already"
                + ("" if same else f" with other content ({_short(reserved.digest)}); that one stays")
            )
            spool.discard(lease.run_id, lease.job_name, artifact.name)
            self._report.append(_summary(line, reserved, self._clock() - started))
            return None
        stats = UploadStats(parts=0, resumed_parts=0, parts_sent=0, sent_bytes=0, existed=True)
        if reserved.upload_needed:
            try:
                stats = self._blobs(ctx).upload(
                    spooled.path,
                    digest=spooled.digest,
                    size=spooled.size_bytes,
                    progress=_progress_lines(ctx.log, artifact.name, spooled.size_bytes),
                )
            except KilnError as exc:
                # The spool and the multipart upload are kept: a retry on this machine resumes them.
                reason = f"the upload failed: {exc.message}"
                ctx.client.fail_artifact(lease.attempt_id, lease.lease_token, reserved.artifact_id, reason)
                self._report.append({**line, "state": "failed", "reason": reason})
                raise
        final = ctx.client.finalize_artifact(
            lease.attempt_id, lease.lease_token, reserved.artifact_id, spooled.digest, spooled.size_bytes
        )
        spool.discard(lease.run_id, lease.job_name, artifact.name)
        upload_s = self._clock() - started
        line.update(parts=stats.parts, resumed_parts=stats.resumed_parts, parts_sent=stats.parts_sent)
        self._report.append(_summary(line, final, upload_s))
        resumed = f", {stats.resumed_parts} of {stats.parts} parts resumed" if stats.resumed_parts else ""
        sent = "stored already" if stats.existed else f"{stats.parts} parts{resumed}"
        ctx.log(
            f"kiln: artifact {artifact.name}: {found.files} files, {_mib(spooled.size_bytes)} "
            f"{_short(final.digest)} {final.state} ({sent}, {upload_s:.2f}s)"
        )
        return None

    def _not_uploaded(self, ctx: JobContext, artifact: Artifact, problem: str, *, fatal: bool) -> str | None:
        """Record an artifact with nothing to upload (failed, with why); return the job's error if fatal.

        The record lets a job that needs the artifact say why it is not there.
        """
        lease = ctx.lease
        reserved = ctx.client.reserve_artifact(
            lease.attempt_id, lease.lease_token, ArtifactReserveIn(name=artifact.name)
        )
        if reserved.state == "committed":  # an earlier attempt of the job uploaded it
            self._report.append(_summary({"name": artifact.name, "direction": "upload"}, reserved, 0.0))
            return None
        ctx.client.fail_artifact(lease.attempt_id, lease.lease_token, reserved.artifact_id, problem)
        self._report.append(
            {"name": artifact.name, "direction": "upload", "state": "failed", "reason": problem}
        )
        if fatal:
            return f"artifact `{artifact.name}`: {problem}"
        if artifact.if_no_files_found == "warn":
            ctx.log(f"kiln: warning: artifact {artifact.name}: {problem}; nothing uploaded")
        return None


def _summary(line: dict[str, Any], artifact: ArtifactOut, seconds: float) -> dict[str, Any]:
    return {
        **line,
        "state": artifact.state,
        "digest": artifact.digest,
        "size": artifact.size_bytes,
        "upload_s": round(seconds, 3),
        "expires_at": artifact.expires_at.isoformat() if artifact.expires_at else None,
        "attempt": artifact.attempt_number,
    }
