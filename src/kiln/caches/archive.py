"""A cache as one blob: deterministic tar+zstd with its manifest, and a restore that trusts nothing.

Packing writes the manifest's members in name order and the manifest itself last
(:data:`MANIFEST_MEMBER`), through :func:`kiln.archive.pack_members`: the same content always gives
the same bytes, so an unchanged cache is never uploaded twice.

Restoring assumes the blob may be hostile (its digest was verified, but a writer can put anything
under a digest). Every entry must lie under one of the cache's own paths; absolute paths, ``..``,
hard links, device files, fifos, setuid/setgid bits and symbolic links that leave their cache path
are refused, and so is an archive that unpacks to more than it declared. Everything is extracted
into a staging folder first and moved into place only when the whole archive passed; nothing is
ever written through a link that the job placed on the host.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import zstandard

from kiln.archive import ArchiveInfo, pack_members
from kiln.caches.checks import MANIFEST_MEMBER, ArchiveChecker, CachePath, member_check
from kiln.caches.extract import extract_archive
from kiln.caches.files import walk
from kiln.caches.manifest import CacheRoot, Manifest, ScanResult
from kiln.errors import IntegrityError

__all__ = [
    "MANIFEST_MEMBER",
    "CachePath",
    "RestoreResult",
    "inspect_archive",
    "member_check",
    "move_into_place",
    "pack_cache",
    "restore_cache",
]


def pack_cache(scan: ScanResult, dest: BinaryIO, *, threads: int = -1) -> ArchiveInfo:
    """Write the scanned cache and its manifest to ``dest`` (zstd on ``threads`` threads; -1: all)."""
    members = [(e.path, scan.sources[e.path]) for e in scan.manifest.entries]
    return pack_members(members, dest, threads=threads, trailer=(MANIFEST_MEMBER, scan.manifest.to_json()))


def inspect_archive(blob: BinaryIO, paths: Sequence[CachePath], *, max_unpacked_bytes: int) -> int:
    """Apply the restore's checks to every entry without extracting anything; return the content bytes.

    The control plane runs this before it believes a runner that calls an entry corrupt: only an
    entry that really fails is quarantined, so a runner cannot evict a good entry by lying.

    Raises
    ------
    UnsafeArchive
        An entry is refused, or the content exceeds ``max_unpacked_bytes``.
    kiln.errors.IntegrityError
        The archive cannot be read.
    """
    checker = ArchiveChecker(paths, max_unpacked_bytes=max_unpacked_bytes)
    try:
        with (
            zstandard.ZstdDecompressor().stream_reader(blob, closefd=False) as zstd_in,
            tarfile.open(fileobj=zstd_in, mode="r|") as tar,
        ):
            for member in tar:
                checker.entry(member)
    except (tarfile.TarError, zstandard.ZstdError) as exc:
        raise IntegrityError(f"archive is corrupt: {exc}") from exc
    checker.finish()
    return checker.total


@dataclass(frozen=True)
class RestoreResult:
    files: int
    unpacked_bytes: int
    manifest: Manifest


def restore_cache(
    blob: BinaryIO, roots: Sequence[CacheRoot], staging: Path, *, max_unpacked_bytes: int
) -> RestoreResult:
    """Unpack a verified cache blob into ``staging``, check it, and move each path into place.

    Raises
    ------
    UnsafeArchive
        An entry is refused, or the archive unpacks to more than ``max_unpacked_bytes``.
    kiln.errors.IntegrityError
        The archive is corrupt or does not match its own manifest.
    UnsafePath
        A destination on the host goes through a link the job placed.
    """
    staging.mkdir(parents=True, exist_ok=True)
    paths = [CachePath(r.logical, r.member) for r in roots]
    checker = ArchiveChecker(paths, max_unpacked_bytes=max_unpacked_bytes)
    total = extract_archive(blob, staging, checker)
    manifest = _read_manifest(staging)
    _check_against_manifest(staging, roots, manifest)
    for root in roots:
        source = staging / root.member
        if os.path.lexists(source):
            move_into_place(source, root)
    return RestoreResult(files=manifest.files, unpacked_bytes=total, manifest=manifest)


def _read_manifest(staging: Path) -> Manifest:
    path = staging / MANIFEST_MEMBER
    try:
        manifest = Manifest.from_json(path.read_bytes())
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise IntegrityError(f"the cache archive has no valid manifest: {exc}") from exc
    path.unlink()
    return manifest


def _check_against_manifest(staging: Path, roots: Sequence[CacheRoot], manifest: Manifest) -> None:
    """Same paths, kinds, sizes and link targets as the manifest says (contents: the blob digest)."""
    found: dict[str, tuple[str, int, str | None]] = {}
    for root in roots:
        top = staging / root.member
        if not os.path.lexists(top):
            continue
        items = [("", top.lstat())]
        if top.is_dir() and not top.is_symlink():
            items += list(walk(top))
        for rel, st in items:
            name = f"{root.member}/{rel}" if rel else root.member
            if stat.S_ISLNK(st.st_mode):
                found[name] = ("link", 0, os.readlink(staging / name))
            elif stat.S_ISDIR(st.st_mode):
                found[name] = ("dir", 0, None)
            else:
                found[name] = ("file", st.st_size, None)
    expected = {e.path: (e.kind, e.size, e.target) for e in manifest.entries}
    if found != expected:
        extra = sorted(found.keys() - expected.keys())[:3]
        missing = sorted(expected.keys() - found.keys())[:3]
        changed = sorted(n for n in found.keys() & expected.keys() if found[n] != expected[n])[:3]
        raise IntegrityError(
            "the cache archive does not match its manifest "
            f"(extra {extra}, missing {missing}, differing {changed})"
        )


def move_into_place(source: Path, root: CacheRoot) -> None:
    """Move a staged cache path to its host folder, merging into what is already there.

    Restored files replace files of the same name; anything else already there stays. Nothing is
    followed: a link in the way is replaced, never written through.
    """
    dest = root.host_path()  # raises UnsafePath when a parent is a link
    dest.parent.mkdir(parents=True, exist_ok=True)
    _merge(source, dest)


def _merge(source: Path, dest: Path) -> None:
    try:
        existing = dest.lstat()
    except FileNotFoundError:
        _rename(source, dest)
        return
    if source.is_dir() and not source.is_symlink() and stat.S_ISDIR(existing.st_mode):
        for name in sorted(os.listdir(source)):
            _merge(source / name, dest / name)
        return
    if stat.S_ISDIR(existing.st_mode):
        shutil.rmtree(dest)
    else:
        dest.unlink()
    _rename(source, dest)


def _rename(source: Path, dest: Path) -> None:
    try:
        os.rename(source, dest)
    except OSError as exc:
        if exc.errno != errno.EXDEV:  # staging on another file system: copy instead
            raise
        shutil.move(str(source), str(dest))
