"""Job phases: the work a runner does around a job's steps (artifacts, caches).

A phase gets a :class:`JobContext` before the first step and again after the last. Phases run
``before_steps`` in list order and ``after_steps`` in reverse, so what is restored first is saved
last. The order of :func:`default_phases` is the contract of ARCHITECTURE.md §2: fetch needed
artifacts, restore caches, (steps), save caches, upload artifacts.

A phase that finds a required input missing raises :class:`~kiln.errors.JobError` (the job ends
``failed`` with the phase's message); an optional accelerator (a cache) logs and carries on.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from kiln.api.models import LeaseOut
from kiln.runner.client import ControlPlaneClient
from kiln.sandbox import JobSandbox, RootFS
from kiln.spec import Job

__all__ = ["JobContext", "JobPhase", "default_phases"]


@dataclass
class JobContext:
    """What a phase may use. ``report`` collects the phase's part of the job's summary."""

    lease: LeaseOut
    job: Job
    client: ControlPlaneClient
    rootfs: RootFS
    sandbox: JobSandbox
    """Map paths inside the sandbox to host paths with ``sandbox.host_path``."""
    workspace: Path
    """Host directory mounted at ``/workspace``."""
    spool_dir: Path
    """Runner-local scratch space that survives this attempt (for resumable uploads)."""
    log: Callable[[str], None]
    """One line into the job's log (masked, shipped to the control plane)."""
    secrets: Mapping[str, str]
    report: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    """Variables a phase adds to every step (``CCACHE_DIR`` …); the job's own ``env`` overrides them."""


class JobPhase(Protocol):
    def before_steps(self, ctx: JobContext) -> None: ...

    def after_steps(self, ctx: JobContext, *, succeeded: bool) -> None: ...


def default_phases() -> list[JobPhase]:
    """The phases every job goes through, in ``before_steps`` order."""
    # The phases build on this module's JobContext, hence the imports here.
    from kiln.artifacts.phase import ArtifactsPhase
    from kiln.caches.phase import CachePhase

    return [ArtifactsPhase(), CachePhase()]
