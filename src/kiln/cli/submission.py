"""What ``kiln run`` and ``kiln submit`` share: snapshot the source, upload it, submit the run."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from kiln.api.models import RunContextIn, RunOut, SubmitIn
from kiln.runner.client import ControlPlaneClient
from kiln.source import snapshot_source

from .images import lock_for_submit

__all__ = ["submit_workflow", "workflow_and_source"]


def workflow_and_source(command: Callable[..., Any]) -> Callable[..., Any]:
    """The ``WORKFLOW`` argument and ``--source`` option of ``kiln run`` and ``kiln submit``."""
    command = click.option(
        "--source",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="The repository to snapshot [default: the workflow file's directory].",
    )(command)
    return click.argument("workflow", type=click.Path(dir_okay=False, path_type=Path), default="kiln.yml")(
        command
    )


def submit_workflow(
    client: ControlPlaneClient,
    workflow_path: Path,
    workflow_text: str,
    source: Path,
    context: RunContextIn,
    secrets: dict[str, str],
    spool_dir: Path,
    console: Console,
) -> RunOut:
    """Upload a snapshot of ``source`` (unless the server has it) and submit the workflow on it.

    The snapshot archive is spooled under ``spool_dir`` and removed once uploaded.
    """
    spool_dir.mkdir(parents=True, exist_ok=True)
    snapshot = snapshot_source(source, spool_dir)
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
            lock=lock_for_submit(workflow_path),
        )
    )
    console.print(f"[dim]kiln: run {run.run_id}: {len(run.jobs)} jobs[/dim]", highlight=False)
    return run
