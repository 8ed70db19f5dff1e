"""The manifest of a cache: every file it holds, with digest, mode, size and link target.

One pass over the cache paths (on the host, between steps, never following links) gives three
things at once: the manifest, the *content digest* that decides whether a grown cache needs a new
entry, and the secret scan that refuses to save a job's secret.

Member names are sandbox paths without the leading ``/`` (``root/.cache/pip/…``,
``workspace/build/…``): the archive says where each file goes, and a restore checks that it goes
under one of the cache's own paths.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kiln.caches.files import UnsafePath, safe_path, walk
from kiln.caches.secretscan import SecretScanner

__all__ = ["MANIFEST_FORMAT", "CacheRoot", "Manifest", "ManifestEntry", "scan_roots"]

MANIFEST_FORMAT = "kiln.cache.manifest.v1"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class CacheRoot:
    """One path of a cache: its member prefix and where it lives on the host.

    ``host_base / host_relpath`` is the folder on the host; ``host_relpath`` is checked part by part
    so that a link placed by the job never leads outside ``host_base``.
    """

    logical: str  # "~/.cache/pip"
    member: str  # "root/.cache/pip"
    host_base: Path  # the workspace, or the overlay's upper layer
    host_relpath: str  # "build", "root/.cache/pip"

    def host_path(self) -> Path:
        """The folder on the host, after checking that no part of the way is a link.

        Raises
        ------
        UnsafePath
            Naming the path as the job sees it (``/workspace/build is a symbolic link``).
        """
        try:
            return safe_path(self.host_base, self.host_relpath)
        except UnsafePath as exc:
            inside = "/" + self.member[: len(self.member) - len(self.host_relpath)] + exc.relpath
            raise UnsafePath(inside, exc.reason) from None


@dataclass(frozen=True)
class ManifestEntry:
    path: str
    kind: str  # "file" | "dir" | "link"
    mode: int  # 0o755 / 0o644 for files, 0o755 dirs, 0o777 links: what the archive stores
    size: int = 0
    sha256: str | None = None
    target: str | None = None


@dataclass
class Manifest:
    entries: list[ManifestEntry] = field(default_factory=list)

    @property
    def files(self) -> int:
        return sum(1 for e in self.entries if e.kind != "dir")

    @property
    def unpacked_bytes(self) -> int:
        return sum(e.size for e in self.entries)

    def content_digest(self, volatile: Callable[[ManifestEntry], bool] = lambda _entry: False) -> str:
        """``sha256:`` over every entry but the ``volatile`` ones: equal content, equal digest."""
        sha = hashlib.sha256(MANIFEST_FORMAT.encode() + b"\n")
        for entry in self.entries:
            if volatile(entry):
                continue
            line = [
                entry.path,
                entry.kind,
                oct(entry.mode),
                str(entry.size),
                entry.sha256 or "",
                entry.target or "",
            ]
            sha.update(json.dumps(line, ensure_ascii=False).encode() + b"\n")
        return f"sha256:{sha.hexdigest()}"

    def to_json(self) -> bytes:
        body = {"format": MANIFEST_FORMAT, "entries": [asdict(e) for e in self.entries]}
        return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Manifest:
        body: dict[str, Any] = json.loads(data)
        if body.get("format") != MANIFEST_FORMAT:
            raise ValueError(f"unknown manifest format {body.get('format')!r}")
        return cls([ManifestEntry(**e) for e in body["entries"]])


@dataclass(frozen=True)
class ScanResult:
    manifest: Manifest
    #: (member path, secret name) for every file that holds a secret's value.
    secret_hits: list[tuple[str, str]]
    #: Paths that could not be read safely (a link on the way); nothing under them is cached.
    unsafe: list[str]
    #: host path of each member of the manifest, for the packer.
    sources: dict[str, Path]


def scan_roots(roots: Sequence[CacheRoot], scanner: SecretScanner) -> ScanResult:
    """Walk the cache paths once: manifest entries, content hashes and the secret scan.

    A root that does not exist contributes nothing. A root reached through a link (placed by the
    job) is refused and listed in ``unsafe``; links *inside* a root are recorded as links.
    """
    entries: dict[str, ManifestEntry] = {}
    sources: dict[str, Path] = {}
    hits: list[tuple[str, str]] = []
    unsafe: list[str] = []
    for root in roots:
        try:
            base = root.host_path()
        except UnsafePath as exc:
            unsafe.append(f"{exc} (cache path {root.logical})")
            continue
        try:
            top = base.lstat()
        except FileNotFoundError:
            continue
        items: Iterable[tuple[str, os.stat_result]] = [("", top)]
        if stat.S_ISDIR(top.st_mode):
            items = [("", top), *walk(base)]
        for rel, st in items:
            member = f"{root.member}/{rel}" if rel else root.member
            host = base / rel if rel else base
            entry = _entry(member, host, st, scanner, hits)
            if entry is not None:
                entries[member] = entry
                sources[member] = host
    ordered = [entries[name] for name in sorted(entries)]
    return ScanResult(Manifest(ordered), hits, unsafe, sources)


def _entry(
    member: str, host: Path, st: os.stat_result, scanner: SecretScanner, hits: list[tuple[str, str]]
) -> ManifestEntry | None:
    for secret in scanner.names_in(member.encode("utf-8", "surrogateescape")):
        hits.append((member, secret))
    if stat.S_ISLNK(st.st_mode):
        target = os.readlink(host)
        for secret in scanner.names_in(target.encode("utf-8", "surrogateescape")):
            hits.append((member, secret))
        return ManifestEntry(member, "link", 0o777, target=target)
    if stat.S_ISDIR(st.st_mode):
        return ManifestEntry(member, "dir", 0o755)
    if not stat.S_ISREG(st.st_mode):
        return None  # fifos, sockets, devices, overlay whiteouts: never cached
    sha = hashlib.sha256()
    search = scanner.stream()
    fd = os.open(host, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    size = 0
    with os.fdopen(fd, "rb") as body:
        while chunk := body.read(_CHUNK):
            sha.update(chunk)
            search.feed(chunk)
            size += len(chunk)
    for secret in search.found():
        hits.append((member, secret))
    mode = 0o755 if st.st_mode & 0o111 else 0o644
    return ManifestEntry(member, "file", mode, size=size, sha256=f"sha256:{sha.hexdigest()}")
