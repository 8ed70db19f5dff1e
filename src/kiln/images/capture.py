"""An overlay upper directory → a deterministic OCI layer (tar, zstd-compressed), in one pass.

Equal inputs must give equal diff_ids (research/images.md A.8, C.4), so the tar is written the same
way whoever builds it, whenever:

- entries sorted byte-wise, each directory before its contents; in a directory, its opaque marker
  first, then its whiteouts, then the rest (the image spec asks for whiteouts before siblings);
- numeric owners only (no user or group names); modes kept as they are (setuid programs stay
  setuid: an image is a system, not a cache);
- every mtime clamped to :data:`~kiln.images.oci.SOURCE_DATE_EPOCH`; no atime or ctime;
- overlayfs' own marks translated: a whiteout (a 0/0 character device) becomes ``.wh.<name>``, an
  opaque directory (``trusted.overlay.opaque=y``) gets ``.wh..wh..opq``; overlay xattrs
  (``trusted.overlay.*``, ``user.overlay.*``) are dropped, ``security.capability`` and ``user.*`` kept;
- hard links inside the layer stay hard links (to the first name, in sort order);
- known noise removed before capture (:data:`NOISE`): logs and caches that differ on every run
  and that no program needs.

The upper was written by the build step's own code, so nothing here follows a link: the walk uses
``lstat`` and opens files with ``O_NOFOLLOW``.
"""

from __future__ import annotations

import fnmatch
import os
import stat
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import zstandard

from kiln.archive.tarzst import HashingWriter
from kiln.images.oci import SOURCE_DATE_EPOCH

__all__ = ["NOISE", "LayerBlob", "UnsupportedUpper", "capture_layer", "remove_noise"]

#: Files removed from every layer: they change on every build and nothing reads them (the same
#: list the Debian official images clean, docker-library/haproxy#229). Deliberately short: a file
#: someone's build relies on must never vanish, and ``__pycache__`` stays (with
#: ``SOURCE_DATE_EPOCH`` set, Python writes reproducible ``.pyc`` files).
NOISE = (
    "var/log/apt/history.log",
    "var/log/apt/term.log",
    "var/log/apt/eipp.log.xz",
    "var/log/dpkg.log",
    "var/log/alternatives.log",
    "var/cache/ldconfig/aux-cache",
    "var/cache/apt/pkgcache.bin",
    "var/cache/apt/srcpkgcache.bin",
    "var/cache/debconf/*-old",
    "var/lib/dpkg/*-old",
)

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
_OVERLAY_XATTRS = ("trusted.overlay.", "user.overlay.")
_REFUSED_XATTRS = ("trusted.overlay.redirect", "trusted.overlay.metacopy")
_KEPT_XATTRS = ("security.capability",)
_OPAQUE_XATTR = "trusted.overlay.opaque"
_ZSTD_LEVEL = 3
_CHUNK = 1 << 20


class UnsupportedUpper(Exception):
    """The upper directory holds something kiln cannot turn into a layer faithfully."""


@dataclass(frozen=True)
class LayerBlob:
    """A captured layer on the runner's disk."""

    path: Path  # the zstd-compressed tar
    diff_id: str  # sha256 of the uncompressed tar
    digest: str  # sha256 of the compressed blob
    size_bytes: int  # compressed
    unpacked_bytes: int  # file content in the layer
    entries: int


def remove_noise(upper: Path, patterns: tuple[str, ...] = NOISE) -> list[str]:
    """Delete the regular files of ``upper`` that match ``patterns``; return their relative paths.

    Whiteouts are left alone: a step that *deleted* a log still deleted it.
    """
    removed: list[str] = []
    for pattern in patterns:
        directory, _, name_pattern = pattern.rpartition("/")
        folder = upper / directory
        try:
            names = sorted(os.listdir(folder))
        except (FileNotFoundError, NotADirectoryError):
            continue
        if folder.is_symlink():
            continue
        for name in names:
            if not fnmatch.fnmatchcase(name, name_pattern):
                continue
            path = folder / name
            if stat.S_ISREG(path.lstat().st_mode):
                path.unlink()
                removed.append(f"{directory}/{name}")
    return removed


def _xattrs(path: Path, relpath: str) -> tuple[dict[str, bytes], bool]:
    """The xattrs a layer keeps, and whether the directory is opaque."""
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}, False
    kept: dict[str, bytes] = {}
    opaque = False
    for name in sorted(names):
        if name.startswith(_REFUSED_XATTRS):
            raise UnsupportedUpper(
                f"{relpath} carries {name}: overlayfs redirect/metacopy are not supported in image layers"
            )
        if name.startswith(_OVERLAY_XATTRS):
            if name in (_OPAQUE_XATTR, "user.overlay.opaque"):
                opaque = os.getxattr(path, name, follow_symlinks=False) == b"y"
            continue
        if name in _KEPT_XATTRS or name.startswith("user."):
            kept[name] = os.getxattr(path, name, follow_symlinks=False)
    return kept, opaque


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _info(name: str, st: os.stat_result, epoch: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mode = stat.S_IMODE(st.st_mode)
    info.uid, info.gid = st.st_uid, st.st_gid
    info.uname = info.gname = ""
    info.mtime = min(int(st.st_mtime), epoch)
    return info


def _marker(name: str, epoch: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mode, info.mtime = 0o600, epoch
    info.uname = info.gname = ""
    return info


def _walk(upper: Path, prefix: str) -> Iterator[tuple[str, Path, os.stat_result]]:
    """``(relative path, host path, lstat)`` of the children of ``upper/prefix``: whiteouts first."""
    folder = upper / prefix if prefix else upper
    children = []
    for name in sorted(os.listdir(folder), key=os.fsencode):
        path = folder / name
        children.append((f"{prefix}{name}", path, path.lstat()))
    children.sort(key=lambda child: (not _is_whiteout(child[2]), os.fsencode(child[0])))
    yield from children


def _entries(
    upper: Path, epoch: int, prefix: str = ""
) -> Iterator[tuple[tarfile.TarInfo, Path | None, dict[str, bytes]]]:
    for relpath, path, st in _walk(upper, prefix):
        if _is_whiteout(st):
            parent, _, name = relpath.rpartition("/")
            yield (
                _marker(f"{parent}/{WHITEOUT_PREFIX}{name}" if parent else WHITEOUT_PREFIX + name, epoch),
                None,
                {},
            )
            continue
        xattrs, opaque = _xattrs(path, relpath)
        info = _info(relpath, st, epoch)
        if stat.S_ISDIR(st.st_mode):
            info.type = tarfile.DIRTYPE
            yield info, None, xattrs
            if opaque:
                yield _marker(f"{relpath}/{OPAQUE_MARKER}", epoch), None, {}
            yield from _entries(upper, epoch, relpath + "/")
        elif stat.S_ISREG(st.st_mode):
            info.type, info.size = tarfile.REGTYPE, st.st_size
            yield info, path, xattrs
        elif stat.S_ISLNK(st.st_mode):
            info.type, info.linkname = tarfile.SYMTYPE, os.readlink(path)
            yield info, None, xattrs
        elif stat.S_ISFIFO(st.st_mode):
            info.type = tarfile.FIFOTYPE
            yield info, None, xattrs
        elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            info.type = tarfile.CHRTYPE if stat.S_ISCHR(st.st_mode) else tarfile.BLKTYPE
            info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
            yield info, None, xattrs
        # Sockets are left out: they are only meaningful while their server runs.


def capture_layer(upper: Path, dest: Path, *, epoch: int = SOURCE_DATE_EPOCH) -> LayerBlob:
    """Write the layer that ``upper`` holds to ``dest`` as zstd-compressed OCI tar.

    Parameters
    ----------
    upper
        An overlay upper directory (or any root filesystem tree), not mounted anywhere.
    dest
        The blob file to write (replaced if it exists).
    epoch
        The clamp for mtimes.

    Returns
    -------
    LayerBlob
        The blob and its diff_id, digest and sizes.

    Raises
    ------
    UnsupportedUpper
        The upper uses overlayfs features a layer cannot express (redirects, metacopy).
    """
    seen: dict[tuple[int, int], str] = {}
    entries = unpacked = 0
    with open(dest, "wb") as out:
        compressed = HashingWriter(out)
        compressor = zstandard.ZstdCompressor(level=_ZSTD_LEVEL, threads=-1, write_checksum=True)
        with compressor.stream_writer(compressed, closefd=False) as zstd_out:
            plain = HashingWriter(zstd_out)  # type: ignore[arg-type]
            with tarfile.open(fileobj=plain, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
                for info, path, xattrs in _entries(upper, epoch):
                    if xattrs:
                        info.pax_headers = {
                            f"SCHILY.xattr.{k}": v.decode("utf-8", "surrogateescape")
                            for k, v in xattrs.items()
                        }
                    entries += 1
                    if path is None:
                        tar.addfile(info)
                        continue
                    st = path.lstat()
                    if st.st_nlink > 1:
                        first = seen.setdefault((st.st_dev, st.st_ino), info.name)
                        if first != info.name:
                            info.type, info.linkname, info.size = tarfile.LNKTYPE, first, 0
                            tar.addfile(info)
                            continue
                    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
                    with os.fdopen(fd, "rb") as body:
                        tar.addfile(info, body)
                    unpacked += info.size
    return LayerBlob(
        path=dest,
        diff_id="sha256:" + plain.sha256.hexdigest(),
        digest="sha256:" + compressed.sha256.hexdigest(),
        size_bytes=compressed.size,
        unpacked_bytes=unpacked,
        entries=entries,
    )
