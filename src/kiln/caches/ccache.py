"""Wiring ccache to a ``type: compiler`` cache, and counting its hits and misses for a job.

Every step of a job with a compiler cache gets ``CCACHE_DIR`` at the cache's (first) path,
``CCACHE_COMPILERCHECK=content`` (ccache hashes the compiler binary itself, not its mtime, which a
fresh image changes) and ``CCACHE_BASEDIR=/workspace`` (paths under the workspace are hashed
relative to it). Users call ``ccache gcc …`` or set ``CC="ccache gcc"``; a job may override any of
the three in its own ``env``.

ccache keeps its counters in ``stats`` files spread over the cache folder. They change on every
hit, so they are *volatile*: left out of the content digest (a cache whose objects did not change
is ``unchanged`` and costs no upload) but still archived, so ``ccache -s`` keeps working.
The job's hits and misses are the difference of the counters before and after the steps, read on
the runner with ``ccache --print-stats`` (which only reads).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CcacheCounters", "ccache_env", "is_volatile", "read_counters"]

logger = logging.getLogger(__name__)

_HIT_COUNTERS = ("direct_cache_hit", "preprocessed_cache_hit")
_MISS_COUNTERS = ("cache_miss",)


def ccache_env(cache_dir_inside: str, workspace: str) -> dict[str, str]:
    """The environment that points ccache at the cache path (a sandbox path)."""
    return {
        "CCACHE_DIR": cache_dir_inside,
        "CCACHE_COMPILERCHECK": "content",
        "CCACHE_BASEDIR": workspace,
    }


def is_volatile(relpath: str) -> bool:
    """Whether a file of a ccache folder (relative to it) is bookkeeping rather than content."""
    parts = relpath.split("/")
    return parts[-1] == "stats" or parts[0] in ("tmp", "lock")


@dataclass(frozen=True)
class CcacheCounters:
    hits: int
    misses: int

    def __sub__(self, other: CcacheCounters) -> CcacheCounters:
        return CcacheCounters(self.hits - other.hits, self.misses - other.misses)


def read_counters(host_dir: Path) -> CcacheCounters | None:
    """ccache's hit and miss counters of the cache folder ``host_dir``, or ``None`` if unknown.

    ``None`` when ccache is not installed on the runner or cannot read the folder; a folder that
    does not exist yet counts zero.
    """
    if not host_dir.is_dir():
        return CcacheCounters(0, 0)
    binary = shutil.which("ccache")
    if binary is None:
        return None
    # Only the folder matters; the runner's own ccache configuration must not.
    env = {"CCACHE_DIR": str(host_dir), "CCACHE_CONFIGPATH": os.devnull, "PATH": os.environ.get("PATH", "")}
    try:
        out = subprocess.run(
            [binary, "--print-stats"], env=env, capture_output=True, text=True, check=True, timeout=60
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        logger.warning("Could not read ccache statistics of %s: %s", host_dir, exc)
        return None
    counters: dict[str, int] = {}
    for line in out.splitlines():
        name, _, value = line.partition("\t")
        if value.strip().isdigit():
            counters[name.strip()] = int(value)
    return CcacheCounters(
        hits=sum(counters.get(n, 0) for n in _HIT_COUNTERS),
        misses=sum(counters.get(n, 0) for n in _MISS_COUNTERS),
    )
