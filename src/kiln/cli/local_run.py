"""``kiln run``: the whole platform in one process, through the same HTTP API as a fleet.

The control plane (SQLite + file blob store under KILN_HOME) serves on a loopback port; the
embedded runner talks to it over HTTP exactly like a remote ``kiln runner`` would, and leases only
the jobs of the run this process submitted, so several ``kiln run`` may share one KILN_HOME.
"""

from __future__ import annotations

import secrets as secrets_module
import threading
from pathlib import Path

from rich.console import Console

from kiln.api.app import create_app
from kiln.api.models import RunContextIn, RunOut, SubmitIn
from kiln.api.plane import open_control_plane
from kiln.api.server import BackgroundServer
from kiln.config import Paths, database_url, storage_url
from kiln.janitor import JanitorLoop
from kiln.runner import ControlPlaneClient, Runner
from kiln.sandbox import probe
from kiln.source import snapshot_source

from .follow import follow_run

__all__ = ["run_locally"]

# Short, so that a runner killed mid-job is noticed quickly on one machine.
LOCAL_LEASE_TTL_S = 10.0


def run_locally(
    workflow_path: Path,
    workflow_text: str,
    source: Path,
    context: RunContextIn,
    secrets: dict[str, str],
    paths: Paths,
    console: Console,
) -> RunOut:
    paths.ensure()
    probe(paths.runner / "sandbox")  # fail with exit 3 before anything is stored
    plane = open_control_plane(
        database_url(paths),
        storage_url(paths),
        spool_dir=paths.home / "spool",
        api_token=secrets_module.token_urlsafe(24),  # only this process may talk to its server
        lease_ttl_s=LOCAL_LEASE_TTL_S,
    )
    with BackgroundServer(create_app(plane)) as server, JanitorLoop(plane.scheduler):
        client = ControlPlaneClient(server.url, plane.api_token)
        snapshot = snapshot_source(source, paths.home / "spool")
        try:
            client.upload_source(snapshot.info.digest, snapshot.archive)
        finally:
            snapshot.archive.unlink(missing_ok=True)
        console.print(
            f"[dim]kiln: source {source} ({snapshot.info.files} files, "
            f"{snapshot.info.size / 1024:.0f} KiB packed, {snapshot.info.digest[:19]})[/dim]",
            highlight=False,
        )
        run = client.submit(
            SubmitIn(
                context=context,
                workflow_text=workflow_text,
                workflow_filename=str(workflow_path),
                source_digest=snapshot.info.digest,
                secrets=secrets,
            )
        )
        console.print(f"[dim]kiln: run {run.run_id}: {len(run.jobs)} jobs[/dim]", highlight=False)
        stop = threading.Event()
        finished = threading.Event()
        runner = Runner(client, paths.runner, run_id=run.run_id, poll_s=0.1)

        def work() -> None:
            try:
                runner.run(
                    stop,
                    until=lambda: (
                        client.get_run(run.run_id).status in {"success", "failed", "error", "cancelled"}
                    ),
                )
            finally:
                finished.set()

        # The runner's thread lives as long as the run: the sandbox's die-with-parent is per thread.
        thread = threading.Thread(target=work, name="kiln-runner", daemon=True)
        thread.start()
        try:
            final = follow_run(
                client, run.run_id, console, on_interrupt=lambda: client.cancel_run(run.run_id)
            )
        finally:
            stop.set()
            thread.join()
        return final
