"""A job's scratch directory: overlay upper/work dirs, mount point, and the owner record.

Layout, under ``<state_dir>/sandboxes/<job_id>/``::

    owner.json   {"pid", "start_time", "cgroup"}: who owns this job, and its cgroup paths
    upper/       the overlay upper: everything the job wrote outside /workspace and /tmp
    work/        overlayfs's work dir (same filesystem as upper)
    merged/      mount point of the overlay (mounted only inside each step's mount namespace)
    base/        an empty lower dir for images without layers

The directory appears atomically, owner record included (built as ``.new-<pid>-<job_id>`` and
renamed), so :mod:`kiln.sandbox.orphans` never finds a scratch dir without an owner to check.
The owner is a pid *and* its start time, so a recycled pid does not look like a live owner.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kiln.sandbox.mountinfo import mount_points

__all__ = [
    "NEW_PREFIX",
    "Owner",
    "Scratch",
    "create_scratch",
    "mounts_under",
    "process_start_time",
    "read_owner",
    "remove_tree",
    "sandboxes_dir",
]

logger = logging.getLogger(__name__)

NEW_PREFIX = ".new-"
OWNER_FILE = "owner.json"


def sandboxes_dir(state_dir: Path) -> Path:
    """Where scratch directories live."""
    return state_dir / "sandboxes"


@dataclass(frozen=True)
class Scratch:
    """Paths of one job's scratch directory."""

    root: Path

    @property
    def upper(self) -> Path:
        return self.root / "upper"

    @property
    def work(self) -> Path:
        return self.root / "work"

    @property
    def merged(self) -> Path:
        return self.root / "merged"

    @property
    def base(self) -> Path:
        return self.root / "base"


@dataclass(frozen=True)
class Owner:
    """The process that owns a scratch directory."""

    pid: int
    start_time: int | None
    cgroup: dict[str, Any] | None

    def alive(self) -> bool:
        """True if the owner process still runs (same pid *and* same start time)."""
        start = process_start_time(self.pid)
        return start is not None and (self.start_time is None or start == self.start_time)


def process_start_time(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot (field 22 of /proc/<pid>/stat), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) may contain spaces and parentheses; fields resume after the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[19])


def create_scratch(state_dir: Path, job_id: str, cgroup_record: dict[str, Any] | None) -> Scratch:
    """Create ``<state_dir>/sandboxes/<job_id>/`` with its owner record, atomically.

    Parameters
    ----------
    state_dir
        The runner's state directory.
    job_id
        Unique name of the job sandbox (one path segment).
    cgroup_record
        The planned job cgroup (:meth:`JobCgroup.record`), written *before* the cgroup exists.
    """
    parent = sandboxes_dir(state_dir)
    parent.mkdir(parents=True, exist_ok=True)
    pid = os.getpid()
    tmp = parent / f"{NEW_PREFIX}{pid}-{job_id}"
    tmp.mkdir(mode=0o700)
    try:
        for sub in ("upper", "work", "merged", "base"):
            (tmp / sub).mkdir(mode=0o755)
        owner = {"pid": pid, "start_time": process_start_time(pid), "cgroup": cgroup_record}
        (tmp / OWNER_FILE).write_text(json.dumps(owner))
        final = parent / job_id
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Scratch(final)


def read_owner(scratch_root: Path) -> Owner | None:
    """The owner record of a scratch dir, or None if it is missing or unreadable."""
    try:
        data = json.loads((scratch_root / OWNER_FILE).read_text())
        return Owner(int(data["pid"]), data.get("start_time"), data.get("cgroup"))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def mounts_under(path: Path) -> list[str]:
    """Mount points in our mount namespace at or below ``path``."""
    prefix = str(path).rstrip("/")
    return [m for m in mount_points() if m == prefix or m.startswith(prefix + "/")]


def remove_tree(path: Path) -> None:
    """Remove a scratch directory, refusing if anything is mounted below it.

    A mount below it would mean the step's mount namespace leaked into ours; deleting through it
    could reach the workspace or an image layer, so we stop and let an operator look.

    Raises
    ------
    OSError
        When something is mounted below ``path`` or the removal fails.
    """
    leaked = mounts_under(path)
    if leaked:
        raise OSError(f"refusing to remove {path}: still mounted: {', '.join(leaked)}")
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(path)
