"""Snapshot a working tree the way a user expects CI to see it.

In a git checkout the snapshot is what ``git status`` would commit plus what it would offer to add:
tracked files (as they are on disk now, edits included) and untracked files that are not ignored.
Outside git it is every file. ``.git`` itself is never part of it. The snapshot is packed once
into a deterministic archive (:mod:`kiln.archive`), so its digest depends on contents only and an
unchanged tree is stored once however often it runs.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from kiln.archive import ArchiveInfo, pack
from kiln.errors import UsageError

__all__ = ["Snapshot", "list_source_files", "snapshot_source"]


@dataclass(frozen=True)
class Snapshot:
    root: Path
    archive: Path  # a temporary file the caller uploads, then deletes
    info: ArchiveInfo
    git: bool


def _git_files(root: Path) -> list[str] | None:
    """Files git would snapshot under ``root``, relative to it, or None when not in a git tree."""
    try:
        listing = subprocess.run(
            ["git", "-C", str(root), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            capture_output=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    names = {name for name in listing.decode("utf-8", "surrogateescape").split("\0") if name}
    # A tracked file deleted in the working tree is listed by --cached but no longer exists.
    return sorted(n for n in names if os.path.lexists(root / n))


def _walk_files(root: Path) -> list[str]:
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != ".git")
        here = Path(dirpath).relative_to(root)
        for name in filenames:
            found.append(str(here / name) if str(here) != "." else name)
        # Symlinks to directories are files of the snapshot, not trees to descend into.
        for name in list(dirnames):
            if (Path(dirpath) / name).is_symlink():
                found.append(str(here / name) if str(here) != "." else name)
                dirnames.remove(name)
    return sorted(found)


def list_source_files(root: Path) -> tuple[list[str], bool]:
    """The relative paths of the snapshot of ``root`` and whether git chose them."""
    if not root.is_dir():
        raise UsageError(f"source directory {root} does not exist")
    files = _git_files(root)
    if files is not None:
        return files, True
    return _walk_files(root), False


def snapshot_source(root: Path, spool_dir: Path) -> Snapshot:
    """Pack the snapshot of ``root`` into a temporary archive inside ``spool_dir``."""
    root = root.resolve()
    files, from_git = list_source_files(root)
    spool_dir.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix="source-", suffix=".tar.zst", dir=spool_dir)
    try:
        with os.fdopen(fd, "wb") as out:
            info = pack(root, files, out)
    except BaseException:
        os.unlink(name)
        raise
    return Snapshot(root=root, archive=Path(name), info=info, git=from_git)
