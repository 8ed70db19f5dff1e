"""The runner's artifact spool: each archive is written to local disk before any byte is uploaded.

Spooling first makes every part of a multipart upload byte-deterministic, so a retried part and a
resumed upload send exactly the bytes the first try would have. The spool is keyed so that the
next attempt of the same job *on the same machine* finds what a killed attempt left:

    <spool>/artifacts/<sha256(run, job, name)[:32]>/<content>.tar.zst   the archive
    <spool>/artifacts/<sha256(run, job, name)[:32]>/<content>.json      its digest and size

``content`` is a digest of the artifact's manifest (every path, kind, mode, size, file digest and
link target). When a retried job produces the same files, it finds the archive by that digest and
does not pack again; the blob transfer's journal (keyed by the archive digest) then resumes the
multipart upload, sending only the parts the storage does not hold. The ``.json`` record is written
atomically after the archive is complete, so a half-written archive is never reused.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from kiln.archive import ARCHIVE_FORMAT, pack_members
from kiln.artifacts.wire import ManifestEntry

__all__ = ["ArtifactSpool", "SpooledArchive", "content_digest"]

#: Spooled archives older than this are left from runs long gone: removed on the next upload.
STALE_AFTER_S = 3 * 86400.0
_FORMAT = f"kiln.artifact.spool.v1 {ARCHIVE_FORMAT} keep-modes"


@dataclass(frozen=True)
class SpooledArchive:
    path: Path
    digest: str
    size_bytes: int
    reused: bool  # found from an earlier attempt, not packed again


def content_digest(manifest: Sequence[ManifestEntry]) -> str:
    """``sha256:`` of the manifest in canonical JSON, with the archive format: same files, same digest."""
    sha = hashlib.sha256(_FORMAT.encode() + b"\n")
    for entry in manifest:
        sha.update(json.dumps(entry.model_dump(), sort_keys=True, separators=(",", ":")).encode() + b"\n")
    return f"sha256:{sha.hexdigest()}"


class ArtifactSpool:
    """Archives of one runner's artifacts on its local disk.

    Parameters
    ----------
    root
        The runner's spool folder (it survives attempts); artifacts go in ``root/artifacts``.
    threads
        zstd threads when packing (-1: as many as the machine has).
    """

    def __init__(self, root: Path, *, threads: int = -1) -> None:
        self.root = root / "artifacts"
        self._threads = threads

    def folder(self, run_id: str, job: str, name: str) -> Path:
        """Where one artifact of one job of one run is spooled (the same on every attempt)."""
        key = hashlib.sha256(f"{run_id}\0{job}\0{name}".encode()).hexdigest()[:32]
        return self.root / key

    def spool(
        self,
        run_id: str,
        job: str,
        name: str,
        members: Sequence[tuple[str, Path]],
        manifest: Sequence[ManifestEntry],
    ) -> SpooledArchive:
        """Return the archive of these members, packing it unless an earlier attempt did."""
        folder = self.folder(run_id, job, name)
        folder.mkdir(parents=True, exist_ok=True)
        content = content_digest(manifest).removeprefix("sha256:")
        archive, record = folder / f"{content}.tar.zst", folder / f"{content}.json"
        found = _read_record(record, archive)
        if found is not None:
            return SpooledArchive(archive, found[0], found[1], reused=True)
        for stale in folder.iterdir():  # other content of the same artifact: a different build
            stale.unlink(missing_ok=True)
        partial = folder / f".packing-{secrets.token_hex(6)}"
        try:
            with partial.open("wb") as out:
                info = pack_members(members, out, threads=self._threads, keep_modes=True)
                out.flush()
                os.fsync(out.fileno())
            os.replace(partial, archive)
        finally:
            partial.unlink(missing_ok=True)
        _write_record(record, info.digest, info.size)
        return SpooledArchive(archive, info.digest, info.size, reused=False)

    def discard(self, run_id: str, job: str, name: str) -> None:
        """Forget an artifact once it is committed (or will never be)."""
        shutil.rmtree(self.folder(run_id, job, name), ignore_errors=True)

    def sweep(self, *, now: float | None = None, older_than_s: float = STALE_AFTER_S) -> list[Path]:
        """Remove spooled artifacts nobody touched for ``older_than_s``; return what was removed."""
        now = time.time() if now is None else now
        removed: list[Path] = []
        with contextlib.suppress(FileNotFoundError):
            for folder in self.root.iterdir():
                with contextlib.suppress(FileNotFoundError):
                    if now - folder.stat().st_mtime > older_than_s:
                        shutil.rmtree(folder, ignore_errors=True)
                        removed.append(folder)
        return removed


def _read_record(record: Path, archive: Path) -> tuple[str, int] | None:
    try:
        data = json.loads(record.read_text())
        digest, size = str(data["digest"]), int(data["size_bytes"])
        if archive.stat().st_size != size:
            return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return digest, size


def _write_record(record: Path, digest: str, size_bytes: int) -> None:
    partial = record.with_name(f".{record.name}.{secrets.token_hex(4)}")
    partial.write_text(json.dumps({"digest": digest, "size_bytes": size_bytes}))
    os.replace(partial, record)
