"""``kiln tokens``, ``kiln tenants`` and ``kiln repos``: access to a kiln server, managed remotely.

A token's secret is printed once, on stdout, when it is created (alone, so a script can capture
it); the server keeps only its hash.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import click

from kiln.api.access_models import TokenCreateIn

from .remote import remote_client, server_options

__all__ = ["commands"]


def _duration(value: str | None) -> float | None:
    if value is None:
        return None
    from kiln.spec.units import parse_duration

    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--expires-in") from exc


def _when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value else "-"


@click.group("tokens")
def tokens() -> None:
    """Create, list and revoke API tokens (admins: all; a tenant's `tokens` scope: its own)."""


@tokens.command("create")
@server_options
@click.option(
    "--kind",
    type=click.Choice(["user", "registration", "admin"]),
    default="user",
    show_default=True,
    help="user: a tenant's API token; registration: registers runners; admin: everything.",
)
@click.option("--tenant", default=None, help="The tenant it belongs to [default: your token's].")
@click.option("--name", required=True, help="What or who the token is for.")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    type=click.Choice(["read", "write", "tokens"]),
    help="A user token's scopes (repeatable) [default: read and write].",
)
@click.option("--expires-in", default=None, metavar="DURATION", help="e.g. 30d, 12h [default: never].")
@click.option("--json", "as_json", is_flag=True, help="Print the token and its details as JSON.")
def create_token(
    server_url: str,
    token: str,
    kind: str,
    tenant: str | None,
    name: str,
    scopes: tuple[str, ...],
    expires_in: str | None,
    as_json: bool,
) -> None:
    """Create a token and print its secret (shown only this once)."""
    created = remote_client(server_url, token).create_token(
        TokenCreateIn(
            kind=kind,  # type: ignore[arg-type]
            tenant=tenant,
            name=name,
            scopes=list(scopes) or None,  # type: ignore[arg-type]
            expires_in_s=_duration(expires_in),
        )
    )
    if as_json:
        click.echo(created.model_dump_json(indent=2))
        return
    click.echo(
        f"token {created.token_id} ({created.kind}, tenant {created.tenant or '*'}, "
        f"scopes {','.join(created.scopes) or '-'}, expires {_when(created.expires_at)})",
        err=True,
    )
    click.echo(created.token)


@tokens.command("list")
@server_options
@click.option("--tenant", default=None, help="Only this tenant's tokens.")
@click.option("--revoked", is_flag=True, help="Also revoked tokens.")
@click.option("--json", "as_json", is_flag=True)
def list_tokens(server_url: str, token: str, tenant: str | None, revoked: bool, as_json: bool) -> None:
    """List tokens (never their secrets)."""
    found = remote_client(server_url, token).list_tokens(tenant=tenant, revoked=revoked)
    if as_json:
        click.echo(json.dumps([t.model_dump(mode="json") for t in found], indent=2))
        return
    click.echo(f"{'ID':<26}  {'KIND':<12}  {'TENANT':<16}  {'CREATED':<16}  {'STATE':<8}  NAME")
    for t in found:
        state = "revoked" if t.revoked_at else "live"
        click.echo(
            f"{t.token_id:<26}  {t.kind:<12}  {t.tenant or '*':<16}  {_when(t.created_at):<16}  "
            f"{state:<8}  {t.name}"
        )


@tokens.command("revoke")
@click.argument("token_id")
@server_options
def revoke_token(token_id: str, server_url: str, token: str) -> None:
    """Revoke a token: every request with it is refused (401) from now on."""
    revoked = remote_client(server_url, token).revoke_token(token_id)
    click.echo(f"token {revoked.token_id} ({revoked.name}) revoked at {_when(revoked.revoked_at)}")


@click.group("tenants")
def tenants() -> None:
    """Create and list tenants (admins create; others see their own)."""


@tenants.command("create")
@click.argument("name")
@server_options
def create_tenant(name: str, server_url: str, token: str) -> None:
    """Create a tenant (nothing changes if it exists)."""
    made = remote_client(server_url, token).create_tenant(name)
    click.echo(f"tenant {made.name}: {made.repositories} repositories, {made.runs} runs")


@tenants.command("list")
@server_options
@click.option("--json", "as_json", is_flag=True)
def list_tenants(server_url: str, token: str, as_json: bool) -> None:
    """List the tenants you can see."""
    found = remote_client(server_url, token).list_tenants()
    if as_json:
        click.echo(json.dumps([t.model_dump() for t in found], indent=2))
        return
    for t in found:
        click.echo(f"{t.name}\t{t.repositories} repositories\t{t.runs} runs")


@click.group("repos")
def repos() -> None:
    """Create and list a tenant's repositories (also created by a first run)."""


@repos.command("create")
@click.argument("name")
@click.option("--tenant", required=True)
@server_options
def create_repo(name: str, tenant: str, server_url: str, token: str) -> None:
    """Create a repository of a tenant."""
    made = remote_client(server_url, token).create_repository(tenant, name)
    click.echo(f"repository {made.tenant}/{made.name}")


@repos.command("list")
@click.option("--tenant", required=True)
@server_options
@click.option("--json", "as_json", is_flag=True)
def list_repos(tenant: str, server_url: str, token: str, as_json: bool) -> None:
    """List a tenant's repositories."""
    found = remote_client(server_url, token).list_repositories(tenant)
    if as_json:
        click.echo(json.dumps([r.model_dump() for r in found], indent=2))
        return
    for r in found:
        click.echo(f"{r.tenant}/{r.name}\t{r.runs} runs")


def commands(exits: Callable[[Callable[..., Any]], Callable[..., Any]]) -> list[click.Group]:
    """The groups of this module, each subcommand's callback mapping kiln errors to exit codes."""
    groups = [tokens, tenants, repos]
    for group in groups:
        for command in group.commands.values():
            command.callback = exits(command.callback)  # type: ignore[arg-type]
    return groups
