"""What a cache archive may hold: the checks every entry passes before anything is written.

Shared by the runner's restore (:func:`kiln.caches.extract.extract_archive`) and the control
plane's own check of an entry a runner calls corrupt (:func:`kiln.caches.archive.inspect_archive`),
so both refuse exactly the same archives.
"""

from __future__ import annotations

import posixpath
import stat
import tarfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from kiln.archive import UnsafeArchive

__all__ = ["MANIFEST_MEMBER", "ArchiveChecker", "CachePath", "member_check", "resolve_link"]

MANIFEST_MEMBER = ".kiln-cache-manifest.json"
_MAX_MANIFEST_BYTES = 256 * 1024 * 1024
_MAX_LINK_HOPS = 40


@dataclass(frozen=True)
class CachePath:
    """A cache path as an archive sees it: ``~/.cache/pip`` is stored under ``root/.cache/pip``."""

    logical: str
    member: str


def _root_of(name: str, roots: Sequence[CachePath]) -> CachePath | None:
    return next((r for r in roots if name == r.member or name.startswith(r.member + "/")), None)


def member_check(roots: Sequence[CachePath]) -> Callable[[tarfile.TarInfo], None]:
    """The check a cache applies to every archive entry before it is extracted (or listed).

    Raises :class:`UnsafeArchive` naming the entry and the reason.
    """

    def check(member: tarfile.TarInfo) -> None:
        name = member.name
        if name.startswith("/"):
            raise UnsafeArchive(f"unsafe cache entry refused: absolute path {name!r}")
        parts = name.rstrip("/").split("/")
        if ".." in parts or "" in parts or "." in parts:
            raise UnsafeArchive(f"unsafe cache entry refused: {name!r} is not a plain relative path")
        if member.mode & (stat.S_ISUID | stat.S_ISGID):
            raise UnsafeArchive(f"unsafe cache entry refused: setuid/setgid bit on {name!r}")
        if name == MANIFEST_MEMBER:
            if not member.isreg() or member.size > _MAX_MANIFEST_BYTES:
                raise UnsafeArchive("unsafe cache entry refused: the manifest is not a plain file")
            return
        if member.islnk():
            raise UnsafeArchive(f"unsafe cache entry refused: hard link {name!r} (kiln never packs one)")
        if member.ischr() or member.isblk() or member.isfifo():
            raise UnsafeArchive(f"unsafe cache entry refused: device or fifo {name!r}")
        if not (member.isreg() or member.isdir() or member.issym()):
            raise UnsafeArchive(f"unsafe cache entry refused: {name!r} is not a file, folder or link")
        root = _root_of(name, roots)
        if root is None:
            if member.isdir() and any(r.member.startswith(name.rstrip("/") + "/") for r in roots):
                return  # a parent folder of a cache path
            raise UnsafeArchive(f"unsafe cache entry refused: {name!r} is outside the cache's paths")
        if member.issym():
            target = member.linkname
            resolved = posixpath.normpath(posixpath.join(posixpath.dirname(name), target))
            if target.startswith("/") or not (
                resolved == root.member or resolved.startswith(root.member + "/")
            ):
                raise UnsafeArchive(
                    f"unsafe cache entry refused: link {name!r} -> {target!r} "
                    f"leaves the cache path {root.logical}"
                )

    return check


def resolve_link(name: str, links: dict[str, str]) -> str | None:
    """Where link ``name`` ends, following the archive's own ``links`` as ``realpath`` would.

    Returns the resolved relative path, or ``None`` if it leaves the archive's top (an absolute
    target, ``..`` above the top) or loops.
    """
    result: list[str] = name.split("/")[:-1]
    pending = links[name].split("/")
    hops = 1
    while pending:
        part = pending.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            if not result:
                return None
            result.pop()
            continue
        candidate = "/".join([*result, part])
        if candidate in links:
            hops += 1
            target = links[candidate]
            if hops > _MAX_LINK_HOPS or target.startswith("/"):
                return None
            pending = target.split("/") + pending
            continue
        result.append(part)
    return "/".join(result)


class ArchiveChecker:
    """Checks a stream of entries, then the links among them; raises :class:`UnsafeArchive`.

    Per entry: :func:`member_check`, the size budget, no name twice, and no entry below a link
    (nothing is ever written through one). At the end: every link, resolved through the others,
    stays inside its own cache path (``s -> .`` then ``t -> s/x/../..`` looks harmless entry by
    entry and is not).
    """

    def __init__(self, paths: Sequence[CachePath], *, max_unpacked_bytes: int) -> None:
        self._paths = list(paths)
        self._check = member_check(paths)
        self._limit = max_unpacked_bytes
        self.total = 0
        self._seen: set[str] = set()
        self._links: dict[str, str] = {}

    def entry(self, member: tarfile.TarInfo) -> None:
        self._check(member)
        self.total += member.size
        if self.total > self._limit:
            raise UnsafeArchive(f"archive unpacks to more than {self._limit} bytes; refused")
        name = member.name.rstrip("/")
        if name in self._seen and not member.isdir():
            raise UnsafeArchive(f"unsafe cache entry refused: {name!r} appears twice")
        self._seen.add(name)
        parts = name.split("/")
        for depth in range(1, len(parts)):
            if "/".join(parts[:depth]) in self._links:
                raise UnsafeArchive(f"unsafe cache entry refused: {name!r} lies below a link")
        if member.issym():
            self._links[name] = member.linkname

    def finish(self) -> None:
        for name, target in self._links.items():
            root = _root_of(name, self._paths)
            resolved = resolve_link(name, self._links)
            if (
                root is None
                or resolved is None
                or not (resolved == root.member or resolved.startswith(root.member + "/"))
            ):
                raise UnsafeArchive(
                    f"unsafe cache entry refused: link {name!r} -> {target!r} resolves outside its cache path"
                )
