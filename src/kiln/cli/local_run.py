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
from kiln.api.models import RunContextIn, RunOut
from kiln.api.plane import open_control_plane
from kiln.api.server import BackgroundServer
from kiln.config import Paths, database_url, storage_url
from kiln.janitor import JanitorLoop
from kiln.runner import ControlPlaneClient, Runner
from kiln.sandbox import probe

from .follow import follow_run
from .submission import submit_workflow

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
        run = submit_workflow(
            client, workflow_path, workflow_text, source, context, secrets, paths.home / "spool", console
        )
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
