"""Pack a list of files into a deterministic ``tar`` compressed with zstd, and unpack one safely.

Deterministic means the same file contents give the same bytes, whoever packs them and whenever:
entries are sorted with parents first, owners are numeric 0 with no names, modes are normalised
from the exec bit (0644/0755, so the packer's umask does not leak in), and every mtime is clamped
to one constant. The archive's sha256 is therefore a content address: an unchanged tree is never
uploaded twice.

Unpacking trusts nothing: absolute paths and setuid/setgid bits are refused, and Python's ``data``
extraction filter refuses ``..``, links that leave the destination and device nodes; kiln
translates every refusal into :class:`UnsafeArchive`, and the total unpacked size is capped so a
decompression bomb stops early.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tarfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import zstandard

from kiln.errors import IntegrityError

__all__ = [
    "ARCHIVE_FORMAT",
    "CLAMPED_MTIME",
    "ArchiveInfo",
    "HashingWriter",
    "UnsafeArchive",
    "pack",
    "pack_members",
    "unpack",
]

# Part of every cache key that depends on archive bytes: bump it when the layout below changes.
ARCHIVE_FORMAT = "kiln.tar+zstd.v1"
# 2000-01-01T00:00:00Z. Not 0: some tools treat a zero mtime as "missing" and warn.
CLAMPED_MTIME = 946684800
_ZSTD_LEVEL = 3
_DEFAULT_MAX_UNPACKED = 64 * 1024**3


class UnsafeArchive(IntegrityError):
    """The archive tries to write outside its destination or holds forbidden entries."""


@dataclass(frozen=True)
class ArchiveInfo:
    digest: str  # "sha256:<hex>" of the compressed bytes
    size: int  # compressed bytes
    files: int  # regular files and symlinks
    unpacked_size: int  # bytes of file content


class _HashingWriter(io.RawIOBase):
    """A write-only file that hashes and counts what passes through to ``target``."""

    def __init__(self, target: BinaryIO) -> None:
        self._target = target
        self.sha256 = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(data)
        self.sha256.update(view)
        self.size += len(view)
        self._target.write(view)
        return len(view)


HashingWriter = _HashingWriter  # image layers are hashed (diff_id, digest) on their way out the same way


def _with_parents(paths: Iterable[str]) -> list[str]:
    """Every path plus all of its parent directories, sorted so parents come first."""
    entries: set[str] = set()
    for path in paths:
        parts = Path(path).parts
        for depth in range(1, len(parts) + 1):
            entries.add("/".join(parts[:depth]))
    return sorted(entries)


def _tarinfo(name: str, full: Path, *, keep_modes: bool = False) -> tarfile.TarInfo | None:
    st = full.lstat()
    kept = stat.S_IMODE(st.st_mode) & 0o777  # never setuid, setgid or sticky
    info = tarfile.TarInfo(name)
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = CLAMPED_MTIME
    if stat.S_ISLNK(st.st_mode):
        info.type = tarfile.SYMTYPE
        info.linkname = os.readlink(full)
        info.mode = 0o777
    elif stat.S_ISDIR(st.st_mode):
        info.type = tarfile.DIRTYPE
        info.mode = kept if keep_modes else 0o755
    elif stat.S_ISREG(st.st_mode):
        info.type = tarfile.REGTYPE
        info.size = st.st_size
        info.mode = kept if keep_modes else (0o755 if st.st_mode & 0o111 else 0o644)
    else:  # sockets, fifos, devices have no place in a source tree or a cache
        return None
    return info


def pack(root: Path, relpaths: Iterable[str], dest: BinaryIO, *, threads: int = -1) -> ArchiveInfo:
    """Write the files ``relpaths`` (relative to ``root``) as a deterministic tar+zstd to ``dest``."""
    return pack_members(
        ((relpath, root / relpath) for relpath in _with_parents(relpaths)), dest, threads=threads
    )


def pack_members(
    members: Iterable[tuple[str, Path]],
    dest: BinaryIO,
    *,
    threads: int = -1,
    trailer: tuple[str, bytes] | None = None,
    keep_modes: bool = False,
) -> ArchiveInfo:
    """Write ``(member name, host path)`` pairs, in the order given, as a deterministic tar+zstd.

    The caller orders the members (parents first) and vouches for the host paths (kiln's caches
    walk them without following links). ``trailer`` is a last, in-memory file: a cache's manifest,
    which is only complete once every file has been read. Entries are normalised as in :func:`pack`,
    except that ``keep_modes`` keeps the permission bits of files and folders as they are (an
    artifact hands a job's outputs on exactly; setuid, setgid and sticky bits are still dropped).
    """
    hashing = _HashingWriter(dest)
    compressor = zstandard.ZstdCompressor(level=_ZSTD_LEVEL, threads=threads, write_checksum=True)
    files = unpacked = 0
    with (
        compressor.stream_writer(hashing, closefd=False) as zstd_out,
        tarfile.open(fileobj=zstd_out, mode="w|", format=tarfile.PAX_FORMAT) as tar,
    ):
        for name, full in members:
            info = _tarinfo(name, full, keep_modes=keep_modes)
            if info is None:
                continue
            if info.isreg():
                with open(full, "rb") as body:
                    tar.addfile(info, body)
                files += 1
                unpacked += info.size
            else:
                tar.addfile(info)
                files += info.issym()
        if trailer is not None:
            info = tarfile.TarInfo(trailer[0])
            info.size, info.mode, info.mtime = len(trailer[1]), 0o644, CLAMPED_MTIME
            tar.addfile(info, io.BytesIO(trailer[1]))
    return ArchiveInfo(
        digest=f"sha256:{hashing.sha256.hexdigest()}", size=hashing.size, files=files, unpacked_size=unpacked
    )


def unpack(
    source: BinaryIO,
    dest: Path,
    *,
    max_unpacked_bytes: int = _DEFAULT_MAX_UNPACKED,
    check: Callable[[tarfile.TarInfo], None] | None = None,
) -> int:
    """Extract a tar+zstd stream into ``dest`` (which must exist); returns the bytes of file content.

    Raises :class:`UnsafeArchive` for any entry the ``data`` filter refuses or when the content
    exceeds ``max_unpacked_bytes``; what was extracted so far is left for the caller to discard
    (callers extract into a temporary folder and move it into place only on success). ``check``
    sees every entry first and raises :class:`UnsafeArchive` for what the caller refuses besides
    (a cache refuses anything outside its own paths).
    """
    total = 0

    def guarded(member: tarfile.TarInfo, path: str) -> tarfile.TarInfo | None:
        nonlocal total
        # The data filter would quietly re-root "/etc/x" and clear setuid bits; kiln never packs
        # either, so an archive holding them was not made by kiln and is refused whole.
        if member.name.startswith("/"):
            raise UnsafeArchive(f"unsafe archive entry refused: absolute path {member.name!r}")
        if member.mode & (stat.S_ISUID | stat.S_ISGID):
            raise UnsafeArchive(f"unsafe archive entry refused: setuid/setgid bit on {member.name!r}")
        if check is not None:
            check(member)
        total += member.size
        if total > max_unpacked_bytes:
            raise UnsafeArchive(f"archive unpacks to more than {max_unpacked_bytes} bytes; refused")
        return tarfile.data_filter(member, path)

    decompressor = zstandard.ZstdDecompressor()
    try:
        with (
            decompressor.stream_reader(source, closefd=False) as zstd_in,
            tarfile.open(fileobj=zstd_in, mode="r|") as tar,
        ):
            tar.extractall(dest, filter=guarded)
    except tarfile.FilterError as exc:
        raise UnsafeArchive(f"unsafe archive entry refused: {exc}") from exc
    except (tarfile.TarError, zstandard.ZstdError) as exc:
        raise IntegrityError(f"archive is corrupt: {exc}") from exc
    return total
