"""A whole kiln in this process for the cache tests: control plane over HTTP, runner, real sandbox.

The same parts as ``kiln run`` (SQLite, a file or S3 blob store, the HTTP API, the job executor with
its phases, blob transfer through grants, bubblewrap), kept warm between runs so that a test may run
dozens of jobs. Each run gets its own context (ref, event, fork), which is what the trust tests vary.
"""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kiln.api.app import create_app
from kiln.api.models import RunContextIn, RunOut, SubmitIn
from kiln.api.plane import ControlPlane, open_control_plane
from kiln.api.server import BackgroundServer
from kiln.caches.phase import CachePhase
from kiln.caches.remote import UserCaches
from kiln.cli.summary import run_summary
from kiln.runner import ControlPlaneClient, JobExecutor
from kiln.source import snapshot_source

__all__ = ["Harness", "context", "start", "stop"]


def context(ref: str = "main", **fields: Any) -> RunContextIn:
    return RunContextIn(repo="demo", ref=ref, **fields)


@dataclass
class Harness:
    plane: ControlPlane
    client: ControlPlaneClient
    state_dir: Path
    spool: Path
    phase: Callable[[], CachePhase] = CachePhase

    def run(
        self,
        project: Path,
        ctx: RunContextIn | None = None,
        *,
        secrets_: dict[str, str] | None = None,
        workflow: str = "kiln.yml",
    ) -> dict[str, Any]:
        """Run the workflow of ``project`` to its end; return the run summary (``kiln run --json``)."""
        snapshot = snapshot_source(project, self.spool)
        try:
            self.client.upload_source(snapshot.info.digest, snapshot.archive)
        finally:
            snapshot.archive.unlink(missing_ok=True)
        run = self.client.submit(
            SubmitIn(
                context=ctx or context(),
                workflow_text=(project / workflow).read_text(),
                source_digest=snapshot.info.digest,
                secrets=secrets_ or {},
            )
        )
        executor = JobExecutor(self.client, self.state_dir, phases=lambda: [self.phase()])
        while (lease := self.client.lease("test-runner", run.run_id)) is not None:
            executor.execute(lease)
        final: RunOut = self.client.get_run(run.run_id)
        return run_summary(final)

    def caches(self, tenant: str = "local") -> UserCaches:
        return UserCaches(self.client, tenant)

    def close(self) -> None:
        self.client.close()


def start(
    tmp: Path, *, database_url: str | None = None, storage_url: str | None = None
) -> tuple[Harness, BackgroundServer]:
    (tmp / "spool").mkdir(parents=True, exist_ok=True)
    plane = open_control_plane(
        database_url or f"sqlite:///{tmp / 'kiln.db'}",
        storage_url or (tmp / "storage").as_uri(),
        spool_dir=tmp / "spool",
        api_token=secrets.token_urlsafe(16),
        lease_ttl_s=30,
    )
    server = BackgroundServer(create_app(plane)).start()
    client = ControlPlaneClient(server.url, plane.api_token)
    return Harness(plane, client, tmp / "runner", tmp / "spool"), server


def stop(harness: Harness, server: BackgroundServer) -> None:
    harness.close()
    server.stop()
    shutil.rmtree(harness.state_dir / "jobs", ignore_errors=True)
