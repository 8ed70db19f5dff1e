"""``kiln cache ls | explain | rm``: see, explain and remove a tenant's cache entries.

Without ``--server`` the commands open the control plane of the local ``KILN_HOME`` in this process
(the one ``kiln run`` uses) and talk to it over the same HTTP API; with ``--server URL`` they talk
to a running ``kiln server``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.markup import escape

from kiln.caches import wire
from kiln.sandbox.base import format_size

from .artifacts import open_client

if TYPE_CHECKING:
    from kiln.caches.remote import UserCaches

__all__ = ["cache_group", "summary_lines", "with_exit_codes"]


@contextmanager
def _user_caches(server: str | None, token: str | None, tenant: str) -> Iterator[UserCaches]:
    from kiln.caches.remote import UserCaches

    # The same connection as `kiln artifacts`: --server, or the local KILN_HOME's control plane.
    with open_client(server, token) as client:
        yield UserCaches(client, tenant)


def _connection_options(command: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--tenant", default="local", show_default=True, help="Whose caches."),
        click.option(
            "--server",
            envvar="KILN_SERVER",
            default=None,
            help="A kiln server [default: the local KILN_HOME].",
        ),
        click.option("--token", envvar="KILN_TOKEN", default=None, help="Bearer token for --server."),
        click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _size(size: int | None) -> str:
    return "-" if size is None else format_size(size)


def _short(digest: str | None, length: int = 15) -> str:
    return digest[:length] if digest else "-"


@click.group("cache")
def cache_group() -> None:
    """See, explain and remove cache entries."""


@cache_group.command("ls")
@click.option("--repo", default=None, help="Only this repository.")
@click.option("--name", default=None, help="Only caches of this name.")
@click.option("--scope", default=None, help="Only this scope, e.g. branch:main or pr:feature.")
@_connection_options
def ls_command(
    repo: str | None,
    name: str | None,
    scope: str | None,
    tenant: str,
    server: str | None,
    token: str | None,
    as_json: bool,
) -> None:
    """List committed cache entries, newest first."""
    with _user_caches(server, token, tenant) as caches:
        listing = caches.list(repo=repo, name=name, scope=scope)
    if as_json:
        click.echo(json.dumps(listing.model_dump(mode="json")["entries"], indent=2))
        return
    if not listing.entries:
        click.echo("no cache entries")
        return
    rows = [("REPO", "NAME", "TYPE", "SCOPE", "KEY", "SIZE", "FILES", "SAVED", "ID")]
    for e in listing.entries:
        saved = (e.committed_at or e.created_at).strftime("%Y-%m-%d %H:%M")
        files = str(e.files) if e.files is not None else "-"
        rows.append(
            (e.repo, e.name, e.type, e.scope, _short(e.key), _size(e.size_bytes), files, saved, e.entry_id)
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


@cache_group.command("explain")
@click.argument("job")
@click.argument("cache")
@click.option("--run", "run_id", default=None, help="The run whose lookup to explain [default: the latest].")
@click.option("--repo", default=None, help="Only runs of this repository.")
@_connection_options
def explain_command(
    job: str,
    cache: str,
    run_id: str | None,
    repo: str | None,
    tenant: str,
    server: str | None,
    token: str | None,
    as_json: bool,
) -> None:
    """Why did CACHE of JOB hit, fall back or miss? Its key's inputs against the nearest entry."""
    with _user_caches(server, token, tenant) as caches:
        answer = caches.explain(job, cache, repo=repo, run_id=run_id)
    if as_json:
        click.echo(json.dumps(answer.model_dump(mode="json"), indent=2))
        return
    _print_explanation(Console(highlight=False, soft_wrap=True), answer)


def _print_explanation(console: Console, answer: wire.ExplainOut) -> None:
    console.print(
        f"cache [bold]{escape(answer.cache)}[/bold] ({answer.type}) of job {escape(answer.job)}, "
        f"run {answer.run_id} of {escape(answer.repo)}: [bold]{answer.restore}[/bold]"
    )
    console.print(f"  key    {answer.key}")
    console.print(
        f"  scope  {escape(answer.scope)} ({answer.trust_tier}); "
        f"reads {escape(', '.join(answer.readable_scopes))}"
    )
    nearest = answer.nearest
    if nearest is not None:
        differing = sum(1 for i in answer.inputs if i.differs)
        label = "restored" if answer.matched is not None else "nearest"
        console.print(
            f"  {label} entry {nearest.entry_id}: key {_short(nearest.key, 19)} in {escape(nearest.scope)}, "
            f"saved by job {escape(nearest.producer_job or '-')} of run {nearest.producer_run_id or '-'}; "
            f"{differing} input(s) differ"
        )
    console.print()
    for item in answer.inputs:
        mark = "≠" if item.differs else "="
        value = "(absent)" if item.value is None else item.value
        line = f"  {mark} {escape(item.name)}: {escape(value)}"
        if item.differs:
            theirs = "(absent)" if item.nearest is None else item.nearest
            line = f"[yellow]{line}[/yellow]\n      entry: {escape(theirs)}"
        console.print(line)
    for note in answer.notes:
        console.print(f"  [dim]note: {escape(note)}[/dim]")


@cache_group.command("rm")
@click.argument("entry_ids", nargs=-1)
@click.option("--repo", default=None, help="Every entry of this repository.")
@click.option("--name", default=None, help="Every entry of this cache name.")
@click.option("--scope", default=None, help="Every entry of this scope.")
@click.option("--all", "remove_all", is_flag=True, help="Every cache entry of the tenant.")
@_connection_options
def rm_command(
    entry_ids: tuple[str, ...],
    repo: str | None,
    name: str | None,
    scope: str | None,
    remove_all: bool,
    tenant: str,
    server: str | None,
    token: str | None,
    as_json: bool,
) -> None:
    """Remove cache entries by id, or every entry matching the filters. Their blobs go to the janitor."""
    if not (entry_ids or repo or name or scope or remove_all):
        raise click.UsageError("name entry ids, or --repo/--name/--scope, or --all")
    body = wire.RemoveIn(entry_ids=list(entry_ids), repo=repo, name=name, scope=scope, all=remove_all)
    with _user_caches(server, token, tenant) as caches:
        answer = caches.remove(body)
    if as_json:
        click.echo(json.dumps(answer.model_dump(mode="json")))
    else:
        click.echo(f"removed {answer.removed} cache entr{'y' if answer.removed == 1 else 'ies'}")


def with_exit_codes(wrap: Callable[[Callable[..., Any]], Callable[..., Any]]) -> click.Group:
    """The group, every command's callback wrapped by the CLI's error-to-exit-code mapping."""
    for command in cache_group.commands.values():
        command.callback = wrap(command.callback)  # type: ignore[arg-type]
    return cache_group


def summary_lines(job: dict[str, Any]) -> list[str]:
    """One line per cache of a job's summary, for the human output of ``kiln run``."""
    lines = []
    for cache in job.get("caches", []):
        restore = cache.get("restore", "skipped")
        if cache.get("matched_scope") and restore in ("hit", "fallback"):
            restore += f" from {cache['matched_scope']}"
        line = (
            f"cache {cache.get('name')} ({cache.get('type')}): restore {restore} "
            f"({cache.get('restore_s', 0):.2f}s, {_size(cache.get('restored_bytes'))}), "
            f"save {cache.get('save', 'skipped')} ({cache.get('save_s', 0):.2f}s"
        )
        line += (
            f", {_size(cache.get('saved_archive_bytes'))} packed)" if cache.get("save") == "saved" else ")"
        )
        if cache.get("compiler_hits") is not None:
            line += f", ccache {cache['compiler_hits']} hits / {cache['compiler_misses']} misses"
        if cache.get("error"):  # why it was refused, skipped or failed: a file and a secret's name at most
            line += f": {cache['error']}"
        lines.append(line)
    return lines
