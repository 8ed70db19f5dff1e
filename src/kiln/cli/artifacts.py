"""``kiln artifacts ls | download``: see a run's artifacts and fetch one, verified.

Without ``--server`` the commands open the control plane of the local ``KILN_HOME`` in this process
(the one ``kiln run`` uses) and talk to it over the same HTTP API; with ``--server URL`` they talk
to a running ``kiln server``, seeing only what the token's tenant may see.

``download`` checks the archive's sha256 while it streams and extracts nothing unless it matches;
extraction applies the same checks as a job's (:mod:`kiln.artifacts.extract`).
"""

from __future__ import annotations

import hashlib
import json
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import httpx

from kiln import config
from kiln.errors import ControlPlaneUnavailable, DigestMismatch, IntegrityError, UsageError
from kiln.sandbox.base import format_size

if TYPE_CHECKING:
    from kiln.runner.client import ControlPlaneClient

__all__ = ["artifacts_group", "open_client", "summary_lines", "with_exit_codes"]


@contextmanager
def open_client(server: str | None, token: str | None) -> Iterator[ControlPlaneClient]:
    """A client of ``server``, or of the local KILN_HOME's control plane started in this process."""
    from kiln.runner.client import ControlPlaneClient

    if server:
        client = ControlPlaneClient(server, token, retry_deadline_s=15)
        try:
            yield client
        finally:
            client.close()
        return
    from kiln.api.app import create_app
    from kiln.api.plane import open_control_plane
    from kiln.api.server import BackgroundServer

    paths = config.Paths(config.kiln_home()).ensure()
    plane = open_control_plane(
        config.database_url(paths),
        config.storage_url(paths),
        spool_dir=paths.home / "spool",
        api_token=secrets.token_urlsafe(24),  # only this process may talk to its server
    )
    with BackgroundServer(create_app(plane)) as local:
        client = ControlPlaneClient(local.url, plane.api_token, retry_deadline_s=15)
        try:
            yield client
        finally:
            client.close()


def _connection(command: Callable[..., Any]) -> Callable[..., Any]:
    server = click.option(
        "--server", envvar="KILN_SERVER", default=None, help="A kiln server [default: the local KILN_HOME]."
    )
    token = click.option("--token", envvar="KILN_TOKEN", default=None, help="Bearer token for --server.")
    return server(token(command))


@click.group("artifacts")
def artifacts_group() -> None:
    """List and download the artifacts of a run."""


@artifacts_group.command("ls")
@click.argument("run_id", metavar="RUN")
@click.option("--all", "everything", is_flag=True, help="Also failed, expired and deleted artifacts.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout.")
@_connection
def ls_command(run_id: str, everything: bool, as_json: bool, server: str | None, token: str | None) -> None:
    """List the artifacts of RUN (the committed ones unless --all)."""
    with open_client(server, token) as client:
        found = client.list_artifacts(run_id, everything=everything)
    if as_json:
        click.echo(
            json.dumps(
                [a.model_dump(mode="json", exclude={"manifest", "upload_needed"}) for a in found], indent=2
            )
        )
        return
    if not found:
        click.echo(f"run {run_id} has no {'' if everything else 'committed '}artifacts")
        return
    rows = [("JOB", "NAME", "STATE", "SIZE", "FILES", "DIGEST", "EXPIRES")]
    for a in found:
        expires = a.expires_at.strftime("%Y-%m-%d %H:%M") if a.expires_at else "-"
        size = format_size(a.size_bytes) if a.size_bytes is not None else "-"
        rows.append((a.job, a.name, a.state, size, str(a.files), (a.digest or "-")[:19], expires))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


@artifacts_group.command("download")
@click.argument("run_id", metavar="RUN")
@click.argument("name")
@click.argument("directory", metavar="[DIR]", type=click.Path(file_okay=False, path_type=Path), default=".")
@click.option("--job", default=None, help="The job that produced it, when several jobs used the name.")
@click.option(
    "--archive", "keep_archive", is_flag=True, help="Save the verified NAME.tar.zst, do not extract."
)
@_connection
def download_command(
    run_id: str,
    name: str,
    directory: Path,
    job: str | None,
    keep_archive: bool,
    server: str | None,
    token: str | None,
) -> None:
    """Download artifact NAME of RUN into DIR (default: here), verifying its digest."""
    from kiln.artifacts.extract import extract_artifact
    from kiln.caches.files import UnsafePath

    directory.mkdir(parents=True, exist_ok=True)
    with (
        open_client(server, token) as client,
        tempfile.TemporaryDirectory(dir=directory, prefix=".kiln-") as tmp,
    ):
        artifact = client.get_artifact(run_id, name, job=job)
        if artifact.digest is None:
            raise IntegrityError(f"artifact {name!r} of run {run_id} has no digest")
        archive = Path(tmp) / f"{name}.tar.zst"
        sha, size = hashlib.sha256(), 0
        try:
            with (
                client.download_artifact(run_id, name, job=artifact.job) as response,
                archive.open("wb") as out,
            ):
                for chunk in response.iter_bytes(1024 * 1024):
                    sha.update(chunk)
                    size += len(chunk)
                    out.write(chunk)
        except httpx.HTTPError as exc:
            raise ControlPlaneUnavailable(
                f"the download of artifact {name!r} broke off after {size} bytes: {exc}; nothing was written"
            ) from exc
        got = f"sha256:{sha.hexdigest()}"
        if got != artifact.digest or size != artifact.size_bytes:
            raise DigestMismatch(
                f"artifact {name!r} of job {artifact.job!r} downloaded as {got} ({size} bytes), not "
                f"{artifact.digest} ({artifact.size_bytes} bytes); nothing was written to {directory}"
            )
        if keep_archive:
            target = directory / f"{name}.tar.zst"
            shutil.move(str(archive), target)
            click.echo(f"{target}: {format_size(size)}, {artifact.digest} verified")
            return
        try:
            extract_artifact(
                archive,
                artifact.manifest or [],
                Path(tmp) / "staging",
                directory,
                max_unpacked_bytes=max(artifact.unpacked_bytes, 1),
                complete=not artifact.manifest_truncated,
            )
        except UnsafePath as exc:
            raise UsageError(f"cannot extract artifact {name!r} into {directory}: {exc}") from exc
    click.echo(
        f"{directory}: artifact {name} of job {artifact.job}, {artifact.files} files, "
        f"{format_size(size)}, {artifact.digest} verified"
    )


def with_exit_codes(exits: Callable[[Callable[..., Any]], Callable[..., Any]]) -> click.Group:
    """The group with each command's errors mapped to kiln's exit codes by ``exits``."""
    for command in artifacts_group.commands.values():
        command.callback = exits(command.callback)  # type: ignore[arg-type]
    return artifacts_group


def summary_lines(job: dict[str, Any]) -> list[str]:
    """One line per artifact in a job's summary, for ``kiln run``'s closing table."""
    lines = []
    for item in job.get("artifacts", []):
        size = format_size(item["size"]) if item.get("size") is not None else ""
        if item.get("direction") == "download":
            what = f"artifact {item['name']} of {item['from_job']}: {item['state']}"
        else:
            what = f"artifact {item['name']}: {item['state']}"
            if item.get("parts"):
                resumed = f", {item['resumed_parts']} resumed" if item.get("resumed_parts") else ""
                what += f" ({item['parts']} parts{resumed})"
        reason = f" — {item['reason']}" if item.get("reason") else ""
        lines.append(f"{what} {size}".rstrip() + reason)
    return lines
