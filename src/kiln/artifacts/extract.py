"""Put a downloaded artifact into a job's workspace, trusting nothing in it.

The blob's digest was verified on download, but a digest only says these are the bytes someone
uploaded, not that they are safe. So, in order:

1. unpack into a staging folder beside the workspace, refusing any entry that is not a plain
   relative path, a hard link, a device or fifo, setuid or setgid, a link whose target is
   absolute or leaves the workspace, or a member the manifest does not list; and anything beyond
   the declared unpacked size (a decompression bomb);
2. compare the staged tree with the manifest: every path, kind, size and link target (the
   contents are covered by the archive's digest, checked on download: the manifest's file digests
   come from the same producer, so hashing every file again would add time, not safety);
3. only then move it into the workspace, merging folders, replacing files of the same name, and
   never writing through a link already in the workspace; then give files and folders the modes
   the manifest records (the extraction filter adds owner write to files, and makes folders
   with the default mode).

If any check fails nothing has been moved into the workspace.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import stat
import tarfile
from collections.abc import Callable, Sequence
from pathlib import Path

from kiln.archive import UnsafeArchive, unpack
from kiln.artifacts.wire import ManifestEntry
from kiln.caches.archive import move_into_place
from kiln.caches.files import safe_path, walk
from kiln.caches.manifest import CacheRoot
from kiln.errors import IntegrityError

__all__ = ["extract_artifact", "member_check"]

_KINDS = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "link": tarfile.SYMTYPE}


def member_check(manifest: Sequence[ManifestEntry], *, complete: bool) -> Callable[[tarfile.TarInfo], None]:
    """The check every archive entry passes before it is extracted.

    Parameters
    ----------
    manifest
        The artifact's manifest as its producer recorded it.
    complete
        The manifest lists every member (a truncated one cannot refuse unlisted members).
    """
    listed = {entry.path: entry for entry in manifest}
    links: set[str] = set()

    def check(member: tarfile.TarInfo) -> None:
        name = member.name
        parts = name.rstrip("/").split("/")
        if name.startswith("/") or ".." in parts or "" in parts or "." in parts:
            raise UnsafeArchive(f"unsafe artifact entry refused: {name!r} is not a plain relative path")
        through = next(
            ("/".join(parts[:i]) for i in range(1, len(parts)) if "/".join(parts[:i]) in links), None
        )
        if through is not None:
            raise UnsafeArchive(f"unsafe artifact entry refused: {name!r} goes through the link {through!r}")
        if member.mode & (stat.S_ISUID | stat.S_ISGID):
            raise UnsafeArchive(f"unsafe artifact entry refused: setuid/setgid bit on {name!r}")
        if not (member.isreg() or member.isdir() or member.issym()) or member.islnk():
            raise UnsafeArchive(
                f"unsafe artifact entry refused: {name!r} is not a file, folder or symbolic link"
            )
        if member.issym():
            links.add(name.rstrip("/"))
            target = member.linkname
            resolved = posixpath.normpath(posixpath.join(posixpath.dirname(name), target))
            if target.startswith("/") or resolved == ".." or resolved.startswith("../"):
                raise UnsafeArchive(
                    f"unsafe artifact entry refused: link {name!r} -> {target!r} leaves the workspace"
                )
        expected = listed.get(name.rstrip("/"))
        if expected is None:
            if complete:
                raise UnsafeArchive(
                    f"unsafe artifact entry refused: {name!r} is not in the artifact's manifest"
                )
        elif _KINDS[expected.kind] != member.type and not (
            expected.kind == "file" and member.type == tarfile.AREGTYPE
        ):
            raise UnsafeArchive(
                f"unsafe artifact entry refused: {name!r} is not the {expected.kind} the manifest lists"
            )

    return check


def extract_artifact(
    archive: Path,
    manifest: Sequence[ManifestEntry],
    staging: Path,
    workspace: Path,
    *,
    max_unpacked_bytes: int,
    complete: bool = True,
) -> int:
    """Unpack a verified artifact archive into ``workspace`` (see the module docstring).

    Parameters
    ----------
    archive
        The downloaded archive (its digest already verified).
    manifest
        Its manifest.
    staging
        An empty or missing folder on the workspace's file system; removed afterwards.
    workspace
        Where the artifact's paths go.
    max_unpacked_bytes
        The producer's declared content size: more is refused.
    complete
        False when the stored manifest was truncated (very many files).

    Returns
    -------
    int
        Bytes of file content extracted.

    Raises
    ------
    UnsafeArchive
        An entry is refused, or the archive unpacks to more than declared.
    IntegrityError
        The archive is corrupt or does not match its manifest.
    kiln.caches.files.UnsafePath
        A destination in the workspace goes through a link the job's sources hold.
    """
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        with archive.open("rb") as body:
            total = unpack(
                body,
                staging,
                max_unpacked_bytes=max_unpacked_bytes,
                check=member_check(manifest, complete=complete),
            )
        _check_against_manifest(staging, manifest, complete=complete)
        for name in sorted(os.listdir(staging)):
            move_into_place(staging / name, CacheRoot(name, name, workspace, name))
        _apply_modes(workspace, manifest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return total


def _check_against_manifest(staging: Path, manifest: Sequence[ManifestEntry], *, complete: bool) -> None:
    found: dict[str, tuple[str, int, str | None]] = {}
    inside = os.path.realpath(staging)
    for rel, st in walk(staging):
        if stat.S_ISLNK(st.st_mode):
            # Each link passed a lexical check as it was unpacked; resolved through the finished
            # tree, a chain of links (`up -> ..` unpacked after `up2 -> up/..`) can still leave it.
            if os.path.commonpath([os.path.realpath(staging / rel), inside]) != inside:
                target = os.readlink(staging / rel)
                raise UnsafeArchive(
                    f"unsafe artifact entry refused: link {rel!r} -> {target!r} leaves the workspace"
                )
            found[rel] = ("link", 0, os.readlink(staging / rel))
        elif stat.S_ISDIR(st.st_mode):
            found[rel] = ("dir", 0, None)
        else:
            found[rel] = ("file", st.st_size, None)
    expected = {e.path: (e.kind, e.size_bytes, e.target) for e in manifest}
    missing = sorted(expected.keys() - found.keys())[:3]
    extra = sorted(found.keys() - expected.keys())[:3] if complete else []
    differing = sorted(n for n in found.keys() & expected.keys() if found[n] != expected[n])[:3]
    if missing or extra or differing:
        raise IntegrityError(
            f"the artifact archive does not match its manifest (missing {missing}, extra {extra}, "
            f"differing {differing})"
        )


def _apply_modes(workspace: Path, manifest: Sequence[ManifestEntry]) -> None:
    # Deepest first, so that a folder made read-only does not stop the modes below it.
    for entry in reversed(manifest):
        if entry.kind == "link":
            continue
        path = safe_path(workspace, entry.path)
        if not stat.S_ISLNK(path.lstat().st_mode):
            os.chmod(path, entry.mode & 0o777)
