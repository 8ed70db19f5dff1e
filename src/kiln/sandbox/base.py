"""The sandbox's value types: what an image gives it, the limits of a job, and how a step ended."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

__all__ = [
    "DEFAULT_PATH",
    "SANDBOX_HOME",
    "WORKSPACE",
    "Limits",
    "RootFS",
    "StepOutcome",
    "format_size",
]

SANDBOX_HOME = "/root"
"""The job's home directory inside the sandbox: fresh, writable and empty for every job."""

WORKSPACE = "/workspace"
"""Where the job's workspace (the source snapshot) is mounted read-write inside the sandbox."""

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
"""``PATH`` of the built-in images (Debian's default for root)."""


@dataclass(frozen=True)
class Limits:
    """Resource limits of one job, enforced through cgroups; ``None`` means unlimited.

    Parameters
    ----------
    memory_bytes
        Memory (and swap) the whole job may use, page cache and tmpfs included.
    pids
        Processes and threads the job may have at once.
    cpus
        CPU bandwidth as a number of CPUs: 1.5 is one and a half CPUs (CFS quota).
    """

    memory_bytes: int | None = None
    pids: int | None = None
    cpus: float | None = None

    def __post_init__(self) -> None:
        # Limits come from a validated spec; a bad value here is a programming error.
        if self.memory_bytes is not None and self.memory_bytes < 1 << 20:
            raise ValueError(f"memory limit must be at least 1 MiB, got {self.memory_bytes} bytes")
        if self.pids is not None and self.pids < 1:
            raise ValueError(f"pids limit must be at least 1, got {self.pids}")
        if self.cpus is not None and not (math.isfinite(self.cpus) and self.cpus >= 0.01):
            raise ValueError(f"cpus must be at least 0.01, got {self.cpus}")


@dataclass(frozen=True)
class RootFS:
    """What an image gives the sandbox.

    Parameters
    ----------
    name
        ``"host"``, ``"busybox"`` or a custom image name; for messages only.
    digest
        ``"sha256:<hex>"``; caches are keyed on it.
    layers
        Read-only overlay lower directories, **top first**. May be empty: the sandbox then uses an
        empty directory as the only lower.
    ro_binds
        ``(host path, path inside)`` pairs bound read-only over the overlay (the host image's /usr).
    env
        The image's default environment (``PATH`` …); the runner merges it into a step's env.
    """

    name: str
    digest: str
    layers: tuple[Path, ...]
    ro_binds: tuple[tuple[Path, str], ...] = ()
    env: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class StepOutcome:
    """How one step ended.

    Parameters
    ----------
    exit_code
        The step's exit status; ``None`` when it was killed by a signal. A process killed by a
        signal that kiln cannot attribute shows as ``128 + signal`` (bubblewrap reports it so).
    signal
        The signal that killed it, when kiln knows.
    killed_by
        Why kiln or the kernel stopped it, for humans: ``"memory limit 256 MiB"``,
        ``"pids limit 64"``, ``"timeout after 2 s"``, ``"cancelled"``.
    timed_out
        The step hit its wall-clock timeout.
    duration_s
        Wall-clock time from launch to the end of the step's last process.
    """

    exit_code: int | None
    signal: int | None
    killed_by: str | None
    timed_out: bool
    duration_s: float

    @property
    def ok(self) -> bool:
        """True when the step exited 0 and nothing killed it."""
        return self.exit_code == 0 and self.killed_by is None


_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def format_size(size_bytes: int) -> str:
    """Format a byte count for a message: ``268435456`` → ``"256 MiB"``, ``1610612736`` → ``"1.5 GiB"``.

    Parameters
    ----------
    size_bytes
        A non-negative number of bytes.

    Returns
    -------
    str
        The largest binary unit that keeps the number ≥ 1, with at most one decimal, no
        trailing ``.0``.
    """
    value = float(size_bytes)
    unit = _UNITS[0]
    for unit in _UNITS:
        if value < 1024 or unit == _UNITS[-1]:
            break
        value /= 1024
    text = f"{value:.1f}".removesuffix(".0")
    return f"{text} {unit}"
