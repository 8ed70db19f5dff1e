"""Which files of the workspace an artifact takes, and its manifest.

The workspace was written by the job's own code, so nothing here follows a link: the walk uses
``lstat`` and never descends into a linked folder, and a link is taken as a link. A folder that a
pattern matches is taken whole (``dist``, ``dist/`` and ``dist/**`` mean the same), with its empty
folders; ``exclude`` drops files and whole folders. The parents of everything taken are packed
too, so their modes travel with the artifact.

A link whose target is absolute or leaves the workspace is refused here, at the producer, with
the link's name: it could not be extracted safely in the jobs that need the artifact, and saying
so now beats a puzzling failure in a later job.
"""

from __future__ import annotations

import os
import posixpath
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from kiln.artifacts.wire import ManifestEntry
from kiln.caches.files import file_digest, glob_regex, walk

__all__ = ["Collected", "collect"]


@dataclass
class Collected:
    """What an artifact takes: archive members (parents first) and one manifest entry each."""

    members: list[tuple[str, Path]] = field(default_factory=list)
    manifest: list[ManifestEntry] = field(default_factory=list)
    #: Links that cannot travel, each as "path -> target".
    escaping_links: list[str] = field(default_factory=list)

    @property
    def files(self) -> int:
        """Regular files and links (what a user would count)."""
        return sum(1 for e in self.manifest if e.kind != "dir")

    @property
    def unpacked_bytes(self) -> int:
        return sum(e.size_bytes for e in self.manifest)


def collect(workspace: Path, paths: Sequence[str], exclude: Sequence[str] = ()) -> Collected:
    """Select the members of an artifact from ``workspace``.

    Parameters
    ----------
    workspace
        The job's workspace on the host.
    paths, exclude
        The artifact's globs, relative to the workspace (as the spec normalised them).

    Returns
    -------
    Collected
        Nothing at all when no pattern matched anything.
    """
    include = [glob_regex(p) for p in paths]
    leave_out = [glob_regex(p) for p in exclude]
    chosen: dict[str, os.stat_result] = {}
    whole: set[str] = set()  # folders taken with everything in them
    dropped: set[str] = set()  # folders excluded with everything in them
    for rel, st in walk(workspace):
        parent = posixpath.dirname(rel)
        is_dir = stat.S_ISDIR(st.st_mode)
        if parent in dropped or any(r.match(rel) for r in leave_out):
            if is_dir:
                dropped.add(rel)
            continue
        if parent in whole or any(r.match(rel) for r in include):
            chosen[rel] = st
            if is_dir:
                whole.add(rel)
    for rel in list(chosen):
        parent = posixpath.dirname(rel)
        while parent and parent not in chosen:
            chosen[parent] = (workspace / parent).lstat()
            parent = posixpath.dirname(parent)
    found = Collected()
    for rel in sorted(chosen):  # a parent is a prefix of its children: it sorts first
        entry = _entry(workspace, rel, chosen[rel], found)
        if entry is not None:
            found.members.append((rel, workspace / rel))
            found.manifest.append(entry)
    return found


def _entry(workspace: Path, rel: str, st: os.stat_result, found: Collected) -> ManifestEntry | None:
    mode = stat.S_IMODE(st.st_mode) & 0o777
    if stat.S_ISLNK(st.st_mode):
        target = os.readlink(workspace / rel)
        resolved = posixpath.normpath(posixpath.join(posixpath.dirname(rel), target))
        # Lexically, then through the other links on the way (`up2 -> up/..` with `up -> ..`);
        # resolving reads link targets only, never a file.
        inside = os.path.realpath(workspace)
        physical = os.path.realpath(workspace / rel)
        if (
            target.startswith("/")
            or resolved == ".."
            or resolved.startswith("../")
            or os.path.commonpath([physical, inside]) != inside
        ):
            found.escaping_links.append(f"{rel} -> {target}")
        return ManifestEntry(path=rel, kind="link", mode=0o777, target=target)
    if stat.S_ISDIR(st.st_mode):
        return ManifestEntry(path=rel, kind="dir", mode=mode)
    if stat.S_ISREG(st.st_mode):
        digest = file_digest(workspace / rel)
        return ManifestEntry(path=rel, kind="file", mode=mode, size_bytes=st.st_size, sha256=digest)
    return None  # fifos, sockets and devices are no job output
