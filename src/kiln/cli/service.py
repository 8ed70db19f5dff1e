"""``kiln server`` and ``kiln runner``: the control plane and the runner as long-lived processes.

``kiln server`` migrates its database, makes sure an admin token exists, and serves the API with
the janitor beside it; ``kiln server migrate`` only migrates, ``kiln server admin-token`` mints an
admin token straight in the database (for an operator who lost theirs). ``kiln runner`` registers
with a registration token, then leases and runs jobs until told to stop.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from kiln import config
from kiln.errors import InfrastructureError, UsageError

from .logs import configure_logging

__all__ = ["runner_command", "server_command", "with_exit_codes"]

log = logging.getLogger("kiln.cli.service")

_LOG_FORMAT = click.option(
    "--log-format",
    type=click.Choice(["json", "text"]),
    default="json",
    show_default=True,
    help="Log lines on stderr: one JSON object each (for collectors), or plain text.",
)


def _database_option(command: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--database-url",
        envvar="KILN_DATABASE_URL",
        default=None,
        help="postgresql+psycopg://user@host/db or sqlite:///path [default: SQLite under KILN_HOME].",
    )(command)


def _parse_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise click.BadParameter(f"expected HOST:PORT, got {listen!r}", param_hint="--listen")
    return host.strip("[]") or "127.0.0.1", int(port)


def _wait_for_signal(stop: threading.Event) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())


@click.group("server", invoke_without_command=True)
@_database_option
@click.option(
    "--storage-url",
    envvar="KILN_STORAGE_URL",
    default=None,
    help="s3://bucket/prefix?endpoint=…&region=… or file:///path [default: files under KILN_HOME].",
)
@click.option("--listen", default="127.0.0.1:8765", show_default=True, help="HOST:PORT to serve the API on.")
@click.option(
    "--admin-token",
    "--token",
    "admin_token",
    envvar="KILN_ADMIN_TOKEN",  # not KILN_TOKEN: a user's own token must never become the server's
    default=None,
    help="A server admin token, compared and never stored (or KILN_ADMIN_TOKEN). Without one, the first "
    "start creates an admin token and writes it to --admin-token-file.",
)
@click.option(
    "--admin-token-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Where the first start writes the admin token it creates [default: KILN_HOME/admin-token].",
)
@click.option(
    "--lease-ttl", type=float, default=30.0, show_default=True, help="Seconds a runner's lease lasts."
)
@click.option(
    "--max-attempts", type=int, default=3, show_default=True, help="Attempts per job before it errors."
)
@click.option(
    "--migrate/--no-migrate",
    default=True,
    show_default=True,
    help="Migrate the database at start; with --no-migrate an old schema stops the start.",
)
@_LOG_FORMAT
@click.pass_context
def server_command(
    ctx: click.Context,
    database_url: str | None,
    storage_url: str | None,
    listen: str,
    admin_token: str | None,
    admin_token_file: Path | None,
    lease_ttl: float,
    max_attempts: int,
    migrate: bool,
    log_format: str,
) -> None:
    """Serve the control plane: API, scheduler and janitor. SIGTERM stops it."""
    if ctx.invoked_subcommand is not None:
        return
    from kiln.api.access import bootstrap_admin_token
    from kiln.api.app import create_app
    from kiln.api.plane import ControlPlane
    from kiln.api.server import BackgroundServer
    from kiln.artifacts.gc import GarbageCollector
    from kiln.janitor import JanitorLoop
    from kiln.metadata.db import Database
    from kiln.scheduler import Scheduler
    from kiln.storage import open_blob_store

    configure_logging(log_format)
    paths = config.Paths(config.kiln_home()).ensure()
    host, port = _parse_listen(listen)
    db = Database(database_url or config.database_url(paths))
    if migrate:
        db.migrate()
    else:
        _require_schema_at_head(db)
    plane = ControlPlane(
        scheduler=Scheduler(db, lease_ttl_s=lease_ttl, max_attempts=max_attempts),
        blobs=open_blob_store(storage_url or config.storage_url(paths)),
        spool_dir=paths.home / "spool",
        api_token=admin_token,
        require_auth=True,
    )
    if admin_token is None:
        token_file = admin_token_file or paths.home / "admin-token"
        written = bootstrap_admin_token(plane.scheduler, token_file)
        if written is not None:
            log.warning(
                "Created the first admin token and wrote it to %s: keep it safe.",
                written,
                extra={"action": "admin_token_created", "path": str(written)},
            )
    collector = GarbageCollector(plane.db, plane.blobs, plane.blob_policy)
    collector.cache_quota_bytes = config.cache_quota_bytes()
    stop = threading.Event()
    _wait_for_signal(stop)
    with (
        BackgroundServer(create_app(plane), host, port, log_level="info", own_logging=False) as server,
        # Retention first (it releases expired artifacts' and caches' blobs), then storage garbage.
        JanitorLoop(plane.scheduler, storage=collector),
    ):
        log.info(
            "kiln server listening on %s",
            server.url,
            extra={"action": "server_started", "url": server.url, "database": db.display_url},
        )
        stop.wait()
    log.info("kiln server stopped", extra={"action": "server_stopped"})


def _require_schema_at_head(db: Any) -> None:
    from kiln.errors import DatabaseUnavailable

    current, head = db.schema_revision(), db.head_revision()
    if current != head:
        raise DatabaseUnavailable(
            f"metadata database {db.display_url} is at schema {current}, this kiln needs {head}: "
            "run `kiln server migrate` first"
        )


@server_command.command("migrate")
@_database_option
def migrate_command(database_url: str | None) -> None:
    """Bring the database schema to this kiln's version, then exit (safe to run concurrently)."""
    from kiln.metadata.db import Database

    paths = config.Paths(config.kiln_home()).ensure()
    db = Database(database_url or config.database_url(paths))
    before = db.schema_revision()
    db.migrate()
    after = db.schema_revision()
    click.echo(f"{db.display_url}: schema {before or 'empty'} → {after}", err=True)


@server_command.command("admin-token")
@_database_option
@click.option("--name", default="admin token", show_default=True, help="What the token is for.")
def admin_token_command(database_url: str | None, name: str) -> None:
    """Create an admin token directly in the database and print it (needs database access)."""
    from kiln.api.access import create_admin_token
    from kiln.metadata.db import Database
    from kiln.scheduler import Scheduler

    paths = config.Paths(config.kiln_home()).ensure()
    db = Database(database_url or config.database_url(paths))
    db.migrate()
    click.echo(create_admin_token(Scheduler(db), name))


# -- the runner ------------------------------------------------------------------------------------


def _parse_labels(value: str | None) -> list[str]:
    return [label.strip() for label in (value or "").split(",") if label.strip()]


def _register(client: Any, name: str | None, labels: list[str], stop: threading.Event) -> tuple[Any, str]:
    """Turn the given token into a runner's: register with a registration (or admin) token.

    Waits, backing off, while the control plane cannot be reached; returns the client to lease
    with and the runner's id.
    """
    backoff = 1.0
    while True:
        try:
            me = client.whoami()
            if me.kind == "runner":
                return client, me.runner_id
            if me.kind not in ("registration", "admin"):
                raise UsageError(
                    f"a {me.kind} token cannot run jobs: give `kiln runner` a registration token "
                    "(kiln tokens create --kind registration)"
                )
            registered = client.register_runner(name, labels)
            return client.with_token(registered.token), registered.runner_id
        except InfrastructureError as exc:
            if stop.is_set():
                raise
            log.warning("cannot register yet (%s); trying again in %.0fs", exc.message, backoff)
            stop.wait(backoff)
            backoff = min(backoff * 2, 30.0)


@click.command("runner")
@click.option("--server", "server_url", envvar="KILN_SERVER", required=True, help="The control plane's URL.")
@click.option(
    "--token",
    envvar="KILN_TOKEN",
    required=True,
    help="A registration token (or a runner's own token) for the control plane.",
)
@click.option("--name", default=None, help="Runner name, unique in the fleet [default: host-pid-random].")
@click.option("--labels", default=None, metavar="A,B,…", help="Labels recorded with the runner.")
@click.option("--run", "run_id", default=None, help="Only take jobs of this run.")
@click.option("--once", is_flag=True, help="Exit after one job (or none waiting).")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), default=None)
@click.option(
    "--stop-timeout",
    type=float,
    default=60.0,
    show_default=True,
    help="After SIGTERM, seconds to let the current job finish before giving it back.",
)
@_LOG_FORMAT
def runner_command(
    server_url: str,
    token: str,
    name: str | None,
    labels: str | None,
    run_id: str | None,
    once: bool,
    state_dir: Path | None,
    stop_timeout: float,
    log_format: str,
) -> None:
    """Lease jobs from the control plane and run them in sandboxes.

    SIGTERM or SIGINT: take no new job, let the current one finish for --stop-timeout seconds, then
    give it back (it is queued again for another runner); a second signal gives it back at once.
    """
    from kiln.runner import ControlPlaneClient, Runner
    from kiln.runner.worker import default_runner_id

    configure_logging(log_format)
    stop, urgent = threading.Event(), threading.Event()

    def on_signal(*_: Any) -> None:
        (urgent if stop.is_set() else stop).set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)

    client, runner_id = _register(
        ControlPlaneClient(server_url, token), name or default_runner_id(), _parse_labels(labels), stop
    )
    runner = Runner(
        client, state_dir or config.Paths(config.kiln_home()).runner, runner_id=runner_id, run_id=run_id
    )
    runner.prepare()
    log.info(
        "kiln runner %s working for %s",
        runner.runner_id,
        server_url,
        extra={"action": "runner_started", "runner_id": runner.runner_id},
    )
    failure: list[BaseException] = []

    def work() -> None:
        try:
            if once:
                runner.run_once()
            else:
                runner.run(stop)
        except BaseException as exc:  # reported by the main thread, which owns the exit code
            failure.append(exc)

    # The loop runs in a thread of its own so that this thread can keep answering signals; it lives
    # as long as the runner, which the sandbox's die-with-parent (per thread) needs.
    thread = threading.Thread(target=work, name="kiln-runner", daemon=True)
    thread.start()
    _supervise(runner, thread, stop, urgent, stop_timeout)
    if failure:
        raise failure[0]
    log.info("kiln runner %s stopped", runner.runner_id, extra={"action": "runner_stopped"})


def _supervise(
    runner: Any, thread: threading.Thread, stop: threading.Event, urgent: threading.Event, stop_timeout: float
) -> None:
    """Wait for the loop; after a stop signal, give the current job back once its time is up."""
    deadline: float | None = None
    given_back = False
    while thread.is_alive():
        thread.join(0.2)
        if not stop.is_set() or given_back:
            continue
        if deadline is None:
            deadline = time.monotonic() + stop_timeout
            log.warning(
                "stopping: no new jobs; the current one has %.0fs to finish",
                stop_timeout,
                extra={"action": "runner_stopping"},
            )
        if urgent.is_set() or time.monotonic() >= deadline:
            given_back = runner.give_back("the runner was told to stop")
            if not given_back and urgent.is_set():
                urgent.clear()  # nothing to give back yet, or the server is away: keep trying


def with_exit_codes(exits: Callable[[Callable[..., Any]], Callable[..., Any]]) -> list[click.Command]:
    """The commands of this module, each of whose callbacks maps kiln errors to exit codes."""
    for command in (server_command, migrate_command, admin_token_command, runner_command):
        command.callback = exits(command.callback)  # type: ignore[arg-type]
    return [server_command, runner_command]
