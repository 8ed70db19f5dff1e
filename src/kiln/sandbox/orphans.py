"""Undo what a runner killed with SIGKILL left behind: job processes, cgroups and scratch dirs.

Mounts need no reaping: the overlay only ever exists in a step's private mount namespace, which
the kernel destroys with the step's last process, and those processes die with their cgroup.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from kiln.sandbox.cgroups import job_cgroup_from_record
from kiln.sandbox.scratch import NEW_PREFIX, process_start_time, read_owner, remove_tree, sandboxes_dir

__all__ = ["reap_orphans"]

logger = logging.getLogger(__name__)

_NEW_DIR = re.compile(re.escape(NEW_PREFIX) + r"(\d+)-")


def reap_orphans(state_dir: Path) -> list[str]:
    """Remove the sandboxes under ``state_dir`` whose owner process is dead.

    For each scratch dir whose recorded owner (pid + start time) no longer runs: kill every
    process left in its job cgroup, remove the cgroup, then remove the scratch dir. Sandboxes of
    live owners (this process or another runner sharing the state dir) are left alone. Failures
    are logged and the item is left for the next call.

    Parameters
    ----------
    state_dir
        The runner's state directory.

    Returns
    -------
    list[str]
        What was removed, e.g. ``"cgroup /sys/fs/cgroup/pids/kiln-build-1a2b3c4d"`` and
        ``"scratch /var/lib/kiln/sandboxes/build-1a2b3c4d"``.
    """
    parent = sandboxes_dir(state_dir)
    if not parent.is_dir():
        return []
    removed: list[str] = []
    for entry in sorted(parent.iterdir()):
        try:
            removed += _reap_one(entry)
        except Exception:
            logger.exception(
                "Could not reap an orphaned sandbox; will retry next time.",
                extra={"action": "orphan_reap_failed", "path": str(entry)},
            )
    return removed


def _reap_one(entry: Path) -> list[str]:
    if entry.name.startswith(NEW_PREFIX):
        # Half-created: its owner died between mkdir and rename, before any cgroup existed.
        match = _NEW_DIR.match(entry.name)
        if match and process_start_time(int(match.group(1))) is not None:
            return []
        remove_tree(entry)
        return [f"scratch {entry}"]

    owner = read_owner(entry)
    if owner is not None and owner.alive():
        return []
    removed: list[str] = []
    if owner is not None and owner.cgroup is not None:
        cgroup = job_cgroup_from_record(owner.cgroup)
        if not cgroup.kill_all():
            raise OSError(f"processes in the cgroup of {entry} survived SIGKILL")
        existing = [p for p in cgroup.directories if p.exists()]
        cgroup.remove()
        removed += [f"cgroup {p}" for p in existing]
    remove_tree(entry)
    removed.append(f"scratch {entry}")
    logger.info(
        "Reaped an orphaned job sandbox.",
        extra={"action": "orphan_reaped", "path": str(entry), "removed": removed},
    )
    return removed
