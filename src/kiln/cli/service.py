"""``kiln server`` and ``kiln runner``: the control plane and the runner as long-lived processes."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from typing import Any

import click

from kiln import config

__all__ = ["runner_command", "server_command"]

log = logging.getLogger("kiln")


def _parse_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise click.BadParameter(f"expected HOST:PORT, got {listen!r}", param_hint="--listen")
    return host.strip("[]") or "127.0.0.1", int(port)


@click.command("server")
@click.option(
    "--database-url", envvar="KILN_DATABASE_URL", default=None, help="SQLAlchemy URL [default: SQLite]."
)
@click.option(
    "--storage-url", envvar="KILN_STORAGE_URL", default=None, help="file:///… or s3://bucket/prefix?…"
)
@click.option("--listen", default="127.0.0.1:8765", show_default=True, help="HOST:PORT to serve the API on.")
@click.option(
    "--token", envvar="KILN_TOKEN", default=None, help="Bearer token clients and runners must present."
)
@click.option(
    "--lease-ttl", type=float, default=30.0, show_default=True, help="Seconds a runner's lease lasts."
)
def server_command(
    database_url: str | None, storage_url: str | None, listen: str, token: str | None, lease_ttl: float
) -> None:
    """Serve the control plane: API, scheduler and janitor."""
    from kiln.api.app import create_app
    from kiln.api.plane import open_control_plane
    from kiln.api.server import BackgroundServer
    from kiln.janitor import JanitorLoop, StorageJanitor

    paths = config.Paths(config.kiln_home()).ensure()
    host, port = _parse_listen(listen)
    plane = open_control_plane(
        database_url or config.database_url(paths),
        storage_url or config.storage_url(paths),
        spool_dir=paths.home / "spool",
        api_token=token,
        lease_ttl_s=lease_ttl,
    )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    with (
        BackgroundServer(create_app(plane), host, port, log_level="info") as server,
        JanitorLoop(plane.scheduler, storage=StorageJanitor(plane.db, plane.blobs, plane.blob_policy)),
    ):
        click.echo(f"kiln server listening on {server.url}", err=True)
        stop.wait()
    click.echo("kiln server stopped", err=True)


@click.command("runner")
@click.option("--server", "server_url", envvar="KILN_SERVER", required=True, help="The control plane's URL.")
@click.option("--token", envvar="KILN_TOKEN", default=None, help="Bearer token for the control plane.")
@click.option("--name", default=None, help="Runner name [default: host-pid-random].")
@click.option("--run", "run_id", default=None, help="Only take jobs of this run.")
@click.option("--once", is_flag=True, help="Exit after one job (or none waiting).")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), default=None)
def runner_command(
    server_url: str,
    token: str | None,
    name: str | None,
    run_id: str | None,
    once: bool,
    state_dir: Path | None,
) -> None:
    """Lease jobs from the control plane and run them in sandboxes; SIGTERM stops after the current job."""
    from kiln.runner import ControlPlaneClient, Runner

    client = ControlPlaneClient(server_url, token)
    runner = Runner(
        client, state_dir or config.Paths(config.kiln_home()).runner, runner_id=name, run_id=run_id
    )
    runner.prepare()
    stop = threading.Event()

    def on_signal(*_: Any) -> None:
        log.warning("stopping after the current job")
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    click.echo(f"kiln runner {runner.runner_id} working for {server_url}", err=True)
    if once:
        runner.run_once()
        return
    runner.run(stop)
