"""Extract a cache archive into an empty staging folder without ever following a link.

``tarfile.extractall`` with the ``data`` filter is safe but slow for caches of many small files
(it resolves every destination with ``realpath``, twice). A cache restore knows more: the
destination is a fresh, empty folder, and every entry already passed :func:`member_check`. So this
extractor opens each parent folder one component at a time with ``O_NOFOLLOW | O_DIRECTORY``
relative to the folder above it, and creates files with ``O_CREAT | O_EXCL | O_NOFOLLOW``: a link
placed by an earlier entry can never be written through (the open fails), and an entry that names
an existing file is refused instead of overwriting it. Links are created, never followed; once
all entries are known, each link is resolved through the others and must stay inside its own cache
path (:class:`~kiln.caches.checks.ArchiveChecker`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tarfile
from pathlib import Path
from typing import BinaryIO

import zstandard

from kiln.archive import UnsafeArchive
from kiln.caches.checks import ArchiveChecker
from kiln.errors import IntegrityError

__all__ = ["extract_archive"]

_CHUNK = 1 << 20
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class _Folders:
    """File descriptors of the folders created so far, opened without following links."""

    def __init__(self, root: Path) -> None:
        self._fds: dict[str, int] = {"": os.open(root, _DIR_FLAGS)}

    def fd(self, path: str) -> int:
        if path in self._fds:
            return self._fds[path]
        parent, _, name = path.rpartition("/")
        parent_fd = self.fd(parent)
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, 0o755, dir_fd=parent_fd)
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise UnsafeArchive(
                    f"unsafe cache entry refused: {path!r} is a link or a file, not a folder"
                ) from None
            raise
        self._fds[path] = fd
        return fd

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


def extract_archive(blob: BinaryIO, staging: Path, checker: ArchiveChecker) -> int:
    """Extract a tar+zstd stream into the empty folder ``staging``; return the bytes of file content.

    Every entry passes ``checker`` before it is written, and the links are checked once all are
    known (what was extracted by then stays in ``staging`` for the caller to discard).

    Raises
    ------
    UnsafeArchive
        An entry is refused (see :class:`~kiln.caches.checks.ArchiveChecker`), or a folder on its
        way turns out to be a link.
    IntegrityError
        The archive is not a readable tar+zstd stream.
    """
    folders = _Folders(staging)
    try:
        with (
            zstandard.ZstdDecompressor().stream_reader(blob, closefd=False) as zstd_in,
            tarfile.open(fileobj=zstd_in, mode="r|") as tar,
        ):
            for member in tar:
                checker.entry(member)
                name = member.name.rstrip("/")
                parent, _, base = name.rpartition("/")
                if member.isdir():
                    folders.fd(name)
                elif member.issym():
                    _symlink(member.linkname, base, folders.fd(parent), name)
                else:
                    _write_file(tar, member, base, folders.fd(parent), name)
    except (tarfile.TarError, zstandard.ZstdError) as exc:
        raise IntegrityError(f"archive is corrupt: {exc}") from exc
    finally:
        folders.close()
    checker.finish()
    return checker.total


def _symlink(target: str, base: str, parent_fd: int, name: str) -> None:
    try:
        os.symlink(target, base, dir_fd=parent_fd)
    except FileExistsError:
        raise UnsafeArchive(f"unsafe cache entry refused: {name!r} appears twice") from None


def _write_file(tar: tarfile.TarFile, member: tarfile.TarInfo, base: str, parent_fd: int, name: str) -> None:
    try:
        fd = os.open(base, _FILE_FLAGS, 0o600, dir_fd=parent_fd)
    except FileExistsError:
        raise UnsafeArchive(f"unsafe cache entry refused: {name!r} appears twice") from None
    try:
        source = tar.extractfile(member)
        if source is not None:
            while chunk := source.read(_CHUNK):
                os.write(fd, chunk)
        os.fchmod(fd, stat.S_IMODE(member.mode) & 0o777)
        # The archive's (clamped) mtime, as the sources of a fresh workspace have: a restored build
        # tree is then exactly as old as its inputs, and make sees it as up to date.
        os.utime(fd, (member.mtime, member.mtime))
    finally:
        os.close(fd)
