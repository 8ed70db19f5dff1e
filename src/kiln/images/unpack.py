"""An OCI layer tar → an overlayfs lower directory, without trusting the tar.

Layers come from kiln's own blob store (digest-verified) but also from registries and OCI archives
written by anyone, so every entry is checked before anything is written:

- paths are relative, without ``..``, and nothing is ever written *through* a symbolic link: every
  parent is opened with ``O_NOFOLLOW`` relative to the layer root (a tar holding ``lib -> /etc``
  then ``lib/passwd`` writes nothing to the host's /etc);
- a hard link must point at an earlier entry of the same layer;
- xattrs are limited to ``security.capability`` and ``user.*`` (an untrusted ``trusted.overlay.*``
  xattr could steer overlayfs);
- the unpacked size is capped.

OCI whiteouts become overlayfs' own: ``.wh.<name>`` a 0/0 character device, ``.wh..wh..opq`` the
``trusted.overlay.opaque=y`` xattr. Device nodes and setuid bits are kept: the sandbox mounts images
``nodev`` and ``nosuid`` (bubblewrap's binds), and an image is a system that needs them.

The tar is hashed as it is read; :func:`unpack_layer` refuses it (and leaves nothing behind) unless
the hash is the expected diff_id.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import os
import stat
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import zstandard

from kiln.archive import UnsafeArchive
from kiln.errors import DigestMismatch, IntegrityError
from kiln.images.capture import OPAQUE_MARKER, WHITEOUT_PREFIX
from kiln.images.oci import LAYER_GZIP, LAYER_TAR, LAYER_ZSTD

__all__ = ["decompressed", "unpack_layer"]

_KEPT_XATTRS = ("security.capability",)
_DEFAULT_MAX_BYTES = 64 * 1024**3
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class _HashingReader(io.RawIOBase):
    def __init__(self, source: BinaryIO) -> None:
        self._source = source
        self.sha256 = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self._source.read(len(buffer))
        view = memoryview(buffer)
        view[: len(data)] = data
        self.sha256.update(data)
        return len(data)

    def drain(self) -> None:
        """Hash the rest: tar stops reading at its end marker, the diff_id covers the padding too."""
        while data := self._source.read(1 << 20):
            self.sha256.update(data)


def decompressed(source: BinaryIO, media_type: str) -> BinaryIO:
    """A reader of the uncompressed tar inside a layer blob of ``media_type``."""
    if media_type == LAYER_ZSTD or media_type.endswith("+zstd"):
        return zstandard.ZstdDecompressor().stream_reader(source, closefd=False)  # type: ignore[return-value]
    if media_type == LAYER_GZIP or media_type.endswith(("+gzip", ".tar.gzip", "tar.gz")):
        return gzip.GzipFile(fileobj=source, mode="rb")  # type: ignore[return-value]
    if media_type == LAYER_TAR or media_type.endswith((".tar", "diff.tar")):
        return source
    raise IntegrityError(f"layer media type {media_type!r} is not one kiln can unpack")


def _parts(name: str) -> list[str]:
    parts = [p for p in name.split("/") if p and p != "."]
    if name.startswith("/") or ".." in parts:
        raise UnsafeArchive(f"layer entry {name!r} leaves the layer")
    return parts


class _Writer:
    """Writes entries below ``root`` by directory file descriptor, never through a symlink."""

    def __init__(self, root: Path) -> None:
        self.root_fd = os.open(root, _DIR_FLAGS)

    def close(self) -> None:
        os.close(self.root_fd)

    @contextlib.contextmanager
    def parent(self, parts: list[str]) -> Iterator[int]:
        """The fd of the directory holding ``parts[-1]``, creating missing directories (0755)."""
        fd = os.dup(self.root_fd)
        try:
            for part in parts[:-1]:
                try:
                    child = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    os.mkdir(part, 0o755, dir_fd=fd)
                    child = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except (NotADirectoryError, OSError) as exc:
                    raise UnsafeArchive(
                        f"layer entry below {'/'.join(parts)!r} passes through a link or a file"
                    ) from exc
                os.close(fd)
                fd = child
            yield fd
        finally:
            os.close(fd)

    @staticmethod
    def clear(fd: int, name: str, *, keep_dir: bool) -> None:
        """Remove what is at ``name`` so an entry can take its place (a later duplicate wins)."""
        try:
            st = os.lstat(name, dir_fd=fd)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            if keep_dir:
                return
            raise UnsafeArchive(f"layer replaces the directory {name!r} with something else")
        os.unlink(name, dir_fd=fd)


def _set_xattrs(fd: int, name: str, info: tarfile.TarInfo) -> None:
    for key, value in info.pax_headers.items():
        if not key.startswith("SCHILY.xattr."):
            continue
        attribute = key.removeprefix("SCHILY.xattr.")
        if attribute in _KEPT_XATTRS or (attribute.startswith("user.") and ".overlay." not in attribute):
            target = f"/proc/self/fd/{fd}/{name}"
            os.setxattr(target, attribute, value.encode("utf-8", "surrogateescape"), follow_symlinks=False)


def _finish(fd: int, name: str, info: tarfile.TarInfo, *, link: bool = False) -> None:
    # In this order: chown clears setuid bits and file capabilities, so mode and xattrs come after.
    os.chown(name, info.uid, info.gid, dir_fd=fd, follow_symlinks=False)
    if not link:
        os.chmod(name, info.mode & 0o7777, dir_fd=fd)
    _set_xattrs(fd, name, info)
    os.utime(name, ns=(info.mtime * 10**9, info.mtime * 10**9), dir_fd=fd, follow_symlinks=False)


def unpack_layer(
    source: BinaryIO,
    media_type: str,
    dest: Path,
    *,
    diff_id: str | None = None,
    max_bytes: int = _DEFAULT_MAX_BYTES,
    on_entry: Callable[[tarfile.TarInfo], None] | None = None,
) -> str:
    """Extract a layer blob into the empty directory ``dest``, as an overlayfs lower dir.

    Parameters
    ----------
    source
        The blob, as stored (compressed per ``media_type``).
    media_type
        The OCI layer media type (tar, tar+gzip, tar+zstd).
    dest
        An existing, empty directory; the caller renames it into place on success.
    diff_id
        The expected sha256 of the uncompressed tar; ``None`` to compute it only.
    max_bytes
        Refuse layers whose file content is larger.
    on_entry
        Called with every entry before it is written.

    Returns
    -------
    str
        The diff_id read.

    Raises
    ------
    UnsafeArchive
        An entry would leave ``dest``, write through a link, or exceed ``max_bytes``.
    DigestMismatch
        The tar is not ``diff_id``.
    IntegrityError
        The blob is not a readable layer.
    """
    reader = _HashingReader(decompressed(source, media_type))
    writer = _Writer(dest)
    directories: list[tuple[list[str], tarfile.TarInfo]] = []
    links: dict[str, list[str]] = {}
    total = 0
    try:
        with tarfile.open(fileobj=reader, mode="r|", errorlevel=2) as tar:  # type: ignore[call-overload]
            for info in tar:
                parts = _parts(info.name)
                if not parts:
                    continue  # "./": the root's own metadata is the lower dir's
                if on_entry is not None:
                    on_entry(info)
                total += info.size if info.isreg() else 0
                if total > max_bytes:
                    raise UnsafeArchive(f"layer unpacks to more than {max_bytes} bytes; refused")
                name = parts[-1]
                with writer.parent(parts) as fd:
                    if name == OPAQUE_MARKER:
                        os.setxattr(f"/proc/self/fd/{fd}", "trusted.overlay.opaque", b"y")
                        continue
                    if name.startswith(WHITEOUT_PREFIX):
                        hidden = name.removeprefix(WHITEOUT_PREFIX)
                        _Writer.clear(fd, hidden, keep_dir=False)
                        os.mknod(hidden, stat.S_IFCHR | 0o000, os.makedev(0, 0), dir_fd=fd)
                        continue
                    _Writer.clear(fd, name, keep_dir=info.isdir())
                    if info.isdir():
                        with contextlib.suppress(FileExistsError):
                            os.mkdir(name, 0o700, dir_fd=fd)
                        directories.append((parts, info))
                        continue
                    if info.isreg():
                        out = os.open(
                            name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=fd
                        )
                        body = tar.extractfile(info)
                        assert body is not None
                        with os.fdopen(out, "wb") as handle:
                            while chunk := body.read(1 << 20):
                                handle.write(chunk)
                    elif info.issym():
                        os.symlink(info.linkname, name, dir_fd=fd)
                    elif info.islnk():
                        target = _parts(info.linkname)
                        if "/".join(target) not in links:
                            raise UnsafeArchive(f"hard link {info.name!r} points outside the layer")
                        with writer.parent(target) as target_fd:
                            os.link(
                                target[-1], name, src_dir_fd=target_fd, dst_dir_fd=fd, follow_symlinks=False
                            )
                        links["/".join(parts)] = parts
                        continue  # a hard link shares its target's metadata
                    elif info.ischr() or info.isblk():
                        kind = stat.S_IFCHR if info.ischr() else stat.S_IFBLK
                        os.mknod(name, kind | 0o600, os.makedev(info.devmajor, info.devminor), dir_fd=fd)
                    elif info.isfifo():
                        os.mkfifo(name, 0o600, dir_fd=fd)
                    else:
                        raise UnsafeArchive(f"layer entry {info.name!r} has a type kiln does not unpack")
                    links["/".join(parts)] = parts
                    _finish(fd, name, info, link=info.issym())
            reader.drain()
        # Directories last, deepest first: writing inside one changes its mtime.
        for parts, info in sorted(directories, key=lambda item: len(item[0]), reverse=True):
            with writer.parent(parts) as fd:
                _finish(fd, parts[-1], info)
    except tarfile.TarError as exc:
        raise IntegrityError(f"layer is not a readable tar: {exc}") from exc
    except (zstandard.ZstdError, gzip.BadGzipFile, EOFError) as exc:
        raise IntegrityError(f"layer blob is corrupt: {exc}") from exc
    finally:
        writer.close()
    found = "sha256:" + reader.sha256.hexdigest()
    if diff_id is not None and found != diff_id:
        raise DigestMismatch(f"layer tar is {found}, not the expected diff_id {diff_id}")
    return found
