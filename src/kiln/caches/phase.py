"""The runner's cache phase: restore a job's caches before its steps, save them after.

Before the steps, for every cache of the job: compute its key (the declared files, env and values,
plus the image digest, platform, type, archive format and logical paths), ask the control plane
which entry to restore (one call for all caches), download it (digest-verified), unpack it
safely and move it into place; for a compiler cache, point ccache at it. After the steps: scan
the cache paths (manifest, content digest, secret scan), decide whether there is anything to save,
pack, reserve, upload and commit.

Caches are accelerators: any problem is a miss or a failed save with a warning in the job's log,
unless the cache says ``fail-on-error: true``. Each cache's outcome goes to the job's summary
(``report["caches"]``) and one line per cache to the log, with its timing.

This module runs on the runner: it talks to the control plane over HTTP only, through
:mod:`kiln.caches.remote`, and moves bytes through :class:`BlobTransfer`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from kiln.archive import ARCHIVE_FORMAT, UnsafeArchive
from kiln.caches import wire
from kiln.caches.archive import pack_cache, restore_cache
from kiln.caches.ccache import CcacheCounters, ccache_env, is_volatile, read_counters
from kiln.caches.files import UnsafePath
from kiln.caches.keys import KilnInputs, collect_files, current_platform, key_document, key_of, version_of
from kiln.caches.manifest import CacheRoot, ManifestEntry, scan_roots
from kiln.caches.remote import AttemptCaches
from kiln.caches.secretscan import SecretScanner
from kiln.errors import DigestMismatch, IntegrityError, JobError, KilnError, LeaseLost
from kiln.runner.executor import job_environment
from kiln.runner.phases import JobContext
from kiln.sandbox import WORKSPACE
from kiln.sandbox.base import format_size
from kiln.spec import Step
from kiln.spec.caches import Cache, sandbox_path

__all__ = ["BlobTransfer", "CachePhase", "remote_transfer"]

# Over this many unpacked bytes an archive is refused unless its entry recorded more.
DEFAULT_MAX_UNPACKED_BYTES = 64 * 1024**3


class BlobTransfer(Protocol):
    """Moves cache archives between the runner's disk and the blob store."""

    def upload(self, path: Path, *, digest: str, size: int) -> int:
        """Store the file as blob ``digest``; return the bytes sent (0 if it was stored already)."""
        ...

    def download(self, digest: str, dest: Path) -> int:
        """Write blob ``digest`` to ``dest``, verified; raise DigestMismatch if it is not that blob."""
        ...


def remote_transfer(ctx: JobContext) -> BlobTransfer:
    """Blob transfer through the control plane's per-object grants (``kiln.runner.blobs``)."""
    from kiln.runner.blobs import RemoteBlobs

    blobs = RemoteBlobs(ctx.client, ctx.lease.attempt_id, ctx.lease.lease_token, ctx.spool_dir)

    class _Remote:
        def upload(self, path: Path, *, digest: str, size: int) -> int:
            return blobs.upload(path, digest=digest, size=size).bytes_sent

        def download(self, digest: str, dest: Path) -> int:
            return blobs.download(digest, dest)

    return _Remote()


@dataclass
class _Tracked:
    """One cache through the job: its key, what was restored, and its summary line."""

    cache: Cache
    roots: list[CacheRoot]
    request: wire.CacheKeyIn | None
    report: dict[str, Any]
    restored: wire.CacheEntryOut | None = None
    counters: CcacheCounters | None = None
    problem: str | None = None  # why the cache is not used at all (its key could not be made)
    notes: list[str] = field(default_factory=list)


def _short(digest: str | None) -> str:
    return (digest or "")[:19] + "…" if digest else "-"


class CachePhase:
    """Restores and saves the caches of one job at a time (a phase object is made per job run).

    Parameters
    ----------
    transfer
        Makes the job's :class:`BlobTransfer` (default: :func:`remote_transfer`).
    clock
        Monotonic seconds, for the timings in the summary.
    max_unpacked_bytes
        The most an archive may unpack to when its entry recorded nothing smaller.
    threads
        zstd threads for packing (-1: one per CPU).
    """

    def __init__(
        self,
        transfer: Callable[[JobContext], BlobTransfer] = remote_transfer,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_unpacked_bytes: int = DEFAULT_MAX_UNPACKED_BYTES,
        threads: int = -1,
    ) -> None:
        self._transfer_factory = transfer
        self._clock = clock
        self._max_unpacked = max_unpacked_bytes
        self._threads = threads
        self._tracked: list[_Tracked] = []
        self._transfer: BlobTransfer | None = None

    # -- before the steps -------------------------------------------------------------------------

    def before_steps(self, ctx: JobContext) -> None:
        if not ctx.job.caches:
            return
        self._tracked = [self._prepare(ctx, cache) for cache in ctx.job.caches]
        for tracked in self._tracked:
            if tracked.cache.type == "compiler" and tracked.problem is None:
                ctx.env.update(ccache_env(sandbox_path(tracked.cache.paths[0]), WORKSPACE))
        wanted = [t for t in self._tracked if t.request is not None and t.cache.policy != "push"]
        failure: str | None = None
        for tracked in self._tracked:
            if tracked not in wanted:
                tracked.report["restore"] = "skipped"
                self._say(ctx, tracked, f"restore skipped: {tracked.problem or 'policy: push'}")
            if tracked.problem is not None:
                tracked.report["error"] = tracked.problem
                failure = failure or self._fatal(tracked, f"cache {tracked.cache.name}: {tracked.problem}")
        if wanted:
            started = self._clock()
            try:
                answer = self._api(ctx).lookup([t.request for t in wanted if t.request is not None])
            except LeaseLost:
                raise
            except KilnError as exc:
                for tracked in wanted:
                    failure = failure or self._restore_failed(ctx, tracked, f"lookup failed: {exc.message}")
            else:
                share = (self._clock() - started) / len(wanted)
                for tracked, result in zip(wanted, answer.results, strict=True):
                    failure = self._restore(ctx, tracked, result, share) or failure
        for tracked in self._tracked:
            if tracked.cache.type == "compiler" and tracked.problem is None:
                tracked.counters = self._counters(ctx, tracked)
        self._publish(ctx)
        if failure is not None:
            raise JobError(failure)

    def _prepare(self, ctx: JobContext, cache: Cache) -> _Tracked:
        roots = [_root(ctx, logical) for logical in cache.paths]
        report: dict[str, Any] = {
            "name": cache.name,
            "type": cache.type,
            "restore": "skipped",
            "key": None,
            "matched_key": None,
            "matched_scope": None,
            "restored_bytes": 0,
            "restore_s": 0.0,
            "save": "skipped",
            "saved_bytes": 0,
            "save_s": 0.0,
        }
        if cache.type == "compiler":
            report.update(compiler_hits=None, compiler_misses=None)
        tracked = _Tracked(cache, roots, None, report)
        env = job_environment(ctx.lease, ctx.job, Step(run=":"), ctx.rootfs, ctx.env)
        secret_names = sorted(n for n in cache.key.env if n in ctx.secrets)
        if secret_names:
            tracked.problem = (
                f"key.env names the secret {', '.join(secret_names)}; a secret is never part of a key"
            )
            return tracked
        try:
            files, unmatched = collect_files(ctx.workspace, cache.key.files)
        except OSError as exc:  # an unreadable input: no key can be made, so the cache is not used
            tracked.problem = f"the key's files cannot be read: {exc}"
            return tracked
        for pattern in unmatched:
            tracked.notes.append(f"key.files pattern {pattern!r} matches no file")
        kiln = KilnInputs(
            image=ctx.rootfs.digest,
            platform=current_platform(),
            cache_type=cache.type,
            archive=ARCHIVE_FORMAT,
            paths=tuple(cache.paths),
        )
        key_env = {name: env.get(name) for name in cache.key.env}
        # A key is stored and shown by `kiln cache explain`: no input may carry a secret's value,
        # whatever the variable holding it is called.
        scanner = SecretScanner(ctx.secrets)
        leaks = sorted(
            {f"key.env {n}" for n, v in key_env.items() if v and scanner.names_in(v.encode())}
            | {"key.values" for v in cache.key.values if scanner.names_in(v.encode())}
        )
        if leaks:
            tracked.problem = (
                f"{', '.join(leaks)} holds the value of a secret; a secret is never part of a key"
            )
            return tracked
        document = key_document(
            kiln, patterns=cache.key.files, files=files, env=key_env, values=cache.key.values
        )
        tracked.request = wire.CacheKeyIn(
            name=cache.name,
            type=cache.type,
            key=key_of(document),
            version=version_of(document),
            document=document,
            paths=list(cache.paths),
            restore_keys=cache.restore_keys,
        )
        report["key"] = tracked.request.key
        return tracked

    def _restore(
        self, ctx: JobContext, tracked: _Tracked, result: wire.LookupResultOut, lookup_s: float
    ) -> str | None:
        report, entry = tracked.report, result.entry
        started = self._clock() - lookup_s
        for note in tracked.notes:
            self._say(ctx, tracked, note)
        if entry is None or entry.digest is None:
            report["restore"] = "miss"
            report["restore_s"] = round(self._clock() - started, 3)
            self._say(
                ctx,
                tracked,
                f"miss (key {_short(report['key'])}); `kiln cache explain {ctx.lease.job_name} "
                f"{tracked.cache.name}` shows why",
            )
            return None
        report.update(matched_key=entry.key, matched_scope=entry.scope)
        staging = Path(tempfile.mkdtemp(prefix="restore-", dir=self._spool(ctx)))
        blob = staging.with_suffix(".tar.zst")
        try:
            self._transfer_for(ctx).download(entry.digest, blob)
            limit = min(entry.unpacked_bytes or self._max_unpacked, self._max_unpacked)
            with blob.open("rb") as source:
                restored = restore_cache(source, tracked.roots, staging, max_unpacked_bytes=limit)
        except LeaseLost:
            raise
        except (DigestMismatch, UnsafeArchive, IntegrityError) as exc:
            report["restore"] = "corrupt"
            report["restore_s"] = round(self._clock() - started, 3)
            verdict = self._report_corrupt(ctx, tracked, entry, exc.message)
            self._say(ctx, tracked, f"corrupt entry {entry.entry_id} not restored: {exc.message} ({verdict})")
            return self._fatal(tracked, f"cache {tracked.cache.name}: the entry to restore is corrupt")
        except (KilnError, OSError, UnsafePath) as exc:
            return self._restore_failed(ctx, tracked, f"restore failed: {getattr(exc, 'message', exc)}")
        finally:
            blob.unlink(missing_ok=True)
            shutil.rmtree(staging, ignore_errors=True)
        tracked.restored = entry
        report["restore"] = result.restore
        report["restored_bytes"] = restored.manifest.unpacked_bytes
        report["restored_archive_bytes"] = entry.size_bytes
        report["restore_s"] = round(self._clock() - started, 3)
        how = "hit" if result.restore == "hit" else f"fallback to {_short(entry.key)}"
        self._say(
            ctx,
            tracked,
            f"{how} from {entry.scope}: {restored.files} file(s), "
            f"{format_size(restored.manifest.unpacked_bytes)} in {report['restore_s']:.2f}s",
        )
        return None

    def _report_corrupt(self, ctx: JobContext, tracked: _Tracked, entry: wire.CacheEntryOut, why: str) -> str:
        try:
            answer = self._api(ctx).corrupt(entry.entry_id, tracked.cache.name, why)
        except LeaseLost:
            raise
        except KilnError as exc:
            return f"could not report it: {exc.message}"
        return answer.message

    def _restore_failed(self, ctx: JobContext, tracked: _Tracked, message: str) -> str | None:
        tracked.report["restore"] = "miss"
        tracked.report["error"] = message
        self._say(ctx, tracked, f"{message}; continuing without it")
        return self._fatal(tracked, f"cache {tracked.cache.name}: {message}")

    # -- after the steps --------------------------------------------------------------------------

    def after_steps(self, ctx: JobContext, *, succeeded: bool) -> None:
        if not self._tracked:
            return
        failure: str | None = None
        for tracked in self._tracked:
            if tracked.cache.type == "compiler" and tracked.counters is not None:
                after = self._counters(ctx, tracked)
                if after is not None:
                    delta = after - tracked.counters
                    tracked.report.update(compiler_hits=delta.hits, compiler_misses=delta.misses)
                    self._say(ctx, tracked, f"ccache: {delta.hits} hits, {delta.misses} misses in this job")
            failure = self._save(ctx, tracked, succeeded=succeeded) or failure
        self._publish(ctx)
        self._tracked = []
        if failure is not None:
            raise JobError(failure)

    def _save(self, ctx: JobContext, tracked: _Tracked, *, succeeded: bool) -> str | None:
        cache, report = tracked.cache, tracked.report
        skip = None
        if tracked.request is None:
            skip = tracked.problem or "no key"
        elif cache.policy == "pull":
            skip = "policy: pull"
        elif not succeeded and cache.when == "on-success":
            skip = "the job failed; `when: always` saves after a failure too"
        elif cache.type == "build" and report["restore"] == "hit":
            report["save"] = "unchanged"
            self._say(ctx, tracked, "unchanged (a build entry of this key exists; it is written once)")
            return None
        if skip is not None:
            report["save"] = "skipped"
            self._say(ctx, tracked, f"save skipped: {skip}")
            return None
        started = self._clock()
        try:
            outcome = self._pack_and_store(ctx, tracked)
        except LeaseLost:
            raise
        except (KilnError, OSError, UnsafePath) as exc:
            message = getattr(exc, "message", None) or str(exc)
            report.update(save="error", error=f"save failed: {message}")
            self._say(ctx, tracked, f"save failed: {message}")
            outcome = self._fatal(tracked, f"cache {cache.name}: save failed: {message}")
        report["save_s"] = round(self._clock() - started, 3)
        if report["save"] in ("saved", "unchanged", "lost-race"):
            self._say(ctx, tracked, f"{_save_line(report)} in {report['save_s']:.2f}s")
        return outcome

    def _pack_and_store(self, ctx: JobContext, tracked: _Tracked) -> str | None:
        cache, report, request = tracked.cache, tracked.report, tracked.request
        assert request is not None
        scan = scan_roots(tracked.roots, SecretScanner(ctx.secrets))
        if scan.unsafe:
            report.update(save="error", error="; ".join(scan.unsafe))
            self._say(ctx, tracked, f"not saved: {'; '.join(scan.unsafe)}")
            return self._fatal(tracked, f"cache {cache.name}: {'; '.join(scan.unsafe)}")
        if scan.secret_hits:
            path, secret = scan.secret_hits[0]
            shown = "/" + path
            report.update(save="refused-secret", error=f"{shown} holds the value of secret {secret}")
            self._say(ctx, tracked, f"refused-secret: {shown} holds the value of secret {secret}; not saved")
            return self._fatal(tracked, f"cache {cache.name}: refused to save the secret {secret} ({shown})")
        if not scan.manifest.entries:
            report["save"] = "skipped"
            self._say(ctx, tracked, "save skipped: nothing at the cache paths")
            return None
        volatile = _volatile(tracked) if cache.type == "compiler" else (lambda _entry: False)
        content = scan.manifest.content_digest(volatile)
        restored = tracked.restored
        if restored is not None and report["restore"] == "hit" and restored.content_digest == content:
            report["save"] = "unchanged"
            return None
        fd, name = tempfile.mkstemp(prefix="save-", suffix=".tar.zst", dir=self._spool(ctx))
        archive = Path(name)
        try:
            with os.fdopen(fd, "wb") as out:
                info = pack_cache(scan, out, threads=self._threads)
            api = self._api(ctx)
            reserved = api.reserve(
                wire.ReserveIn(
                    **request.model_dump(),
                    content_digest=content,
                    unpacked_bytes=info.unpacked_size + len(scan.manifest.to_json()),
                    files=scan.manifest.files,
                    restored_entry_id=restored.entry_id if restored else None,
                )
            )
            report.update(saved_bytes=scan.manifest.unpacked_bytes, saved_archive_bytes=info.size)
            if reserved.outcome != "reserved" or reserved.entry_id is None:
                report["save"] = "lost-race" if reserved.outcome == "exists" else "unchanged"
                return None
            try:
                api.uploading(reserved.entry_id, info.digest, info.size)
                sent = self._transfer_for(ctx).upload(archive, digest=info.digest, size=info.size)
                committed = api.commit(reserved.entry_id, info.digest, info.size)
            except LeaseLost:
                raise
            except KilnError as exc:
                with contextlib.suppress(KilnError):
                    api.fail(reserved.entry_id, exc.message)
                raise
            report["uploaded_bytes"] = sent
            report["save"] = committed.save
        finally:
            archive.unlink(missing_ok=True)
        return None

    # -- small helpers ----------------------------------------------------------------------------

    def _api(self, ctx: JobContext) -> AttemptCaches:
        return AttemptCaches(ctx.client, ctx.lease.attempt_id, ctx.lease.lease_token)

    def _transfer_for(self, ctx: JobContext) -> BlobTransfer:
        if self._transfer is None:
            self._transfer = self._transfer_factory(ctx)
        return self._transfer

    @staticmethod
    def _spool(ctx: JobContext) -> Path:
        path = ctx.spool_dir / "caches"
        path.mkdir(parents=True, exist_ok=True)
        return path

    @staticmethod
    def _fatal(tracked: _Tracked, message: str) -> str | None:
        return message if tracked.cache.fail_on_error else None

    @staticmethod
    def _say(ctx: JobContext, tracked: _Tracked, text: str) -> None:
        ctx.log(f"kiln: cache {tracked.cache.name} ({tracked.cache.type}): {text}")

    @staticmethod
    def _counters(ctx: JobContext, tracked: _Tracked) -> CcacheCounters | None:
        try:
            return read_counters(tracked.roots[0].host_path())
        except UnsafePath:
            return None

    def _publish(self, ctx: JobContext) -> None:
        reports = [t.report for t in self._tracked]
        ctx.report["caches"] = reports
        try:
            ctx.client.report(ctx.lease.attempt_id, ctx.lease.lease_token, "caches", reports)
        except LeaseLost:
            raise
        except KilnError as exc:
            ctx.log(f"kiln: could not report the caches to the control plane: {exc.message}")


def _save_line(report: dict[str, Any]) -> str:
    if report["save"] == "saved":
        packed, sent = report.get("saved_archive_bytes", 0), report.get("uploaded_bytes", 0)
        saved = format_size(report["saved_bytes"])
        return f"saved {saved} ({format_size(packed)} packed, {format_size(sent)} uploaded)"
    if report["save"] == "unchanged":
        return "unchanged: same content as the entry restored, nothing uploaded"
    return "lost-race: another run committed this key first; its entry stays"


def _root(ctx: JobContext, logical: str) -> CacheRoot:
    inside = sandbox_path(logical)
    member = inside.lstrip("/")
    if inside == WORKSPACE or inside.startswith(WORKSPACE + "/"):
        return CacheRoot(logical, member, ctx.workspace, inside[len(WORKSPACE) + 1 :])
    return CacheRoot(logical, member, ctx.sandbox.host_path("/"), member)


def _volatile(tracked: _Tracked) -> Callable[[ManifestEntry], bool]:
    """ccache's bookkeeping in the cache's ccache folder (its first path): counters, temporary and
    lock files, and folders, which ccache creates for its counters alone."""
    prefix = tracked.roots[0].member + "/"

    def volatile(entry: ManifestEntry) -> bool:
        inside = entry.path.startswith(prefix)
        return inside and (entry.kind == "dir" or is_volatile(entry.path[len(prefix) :]))

    return volatile
