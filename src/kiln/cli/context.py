"""Run context options shared by ``kiln run`` and ``kiln submit``: who and what a run is for."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from kiln.api.models import RunContextIn

__all__ = ["context_from_options", "parse_secrets", "run_context_options"]


def _current_branch(path: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(path), "symbolic-ref", "--short", "-q", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return out or None


def run_context_options(command: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--tenant", default="local", show_default=True, help="Tenant that owns the run."),
        click.option("--repo", default=None, help="Repository name [default: the source directory's name]."),
        click.option(
            "--ref", default=None, help="Branch of the run [default: the current git branch, else main]."
        ),
        click.option(
            "--default-branch", default="main", show_default=True, help="The repository's default branch."
        ),
        click.option(
            "--event", type=click.Choice(["push", "pull_request"]), default="push", show_default=True
        ),
        click.option("--base", "base_ref", default=None, help="Target branch of a pull request."),
        click.option("--fork", is_flag=True, help="The pull request comes from a fork (needs --pr)."),
        click.option(
            "--pr",
            "pull_request",
            type=click.IntRange(min=1),
            default=None,
            help="The pull request's number; a fork's caches live under it alone.",
        ),
        click.option(
            "--secret",
            "secrets",
            multiple=True,
            metavar="NAME=VALUE",
            help="A secret for the steps, as an environment variable; masked in all output. Repeatable.",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def parse_secrets(values: tuple[str, ...]) -> dict[str, str]:
    secrets: dict[str, str] = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name.isidentifier():
            raise click.BadParameter(f"expected NAME=VALUE, got {name!r}=…", param_hint="--secret")
        secrets[name] = value
    return secrets


def context_from_options(source: Path, options: dict[str, Any]) -> RunContextIn:
    if options["fork"] and options["event"] != "pull_request":
        raise click.BadParameter("--fork only makes sense with --event pull_request", param_hint="--fork")
    if options["pull_request"] is not None and options["event"] != "pull_request":
        raise click.BadParameter("--pr only makes sense with --event pull_request", param_hint="--pr")
    if options["fork"] and options["pull_request"] is None:
        raise click.BadParameter(
            "a fork's pull request needs its number, --pr N: its caches are kept for that pull request alone",
            param_hint="--fork",
        )
    if options["base_ref"] and options["event"] != "pull_request":
        raise click.BadParameter("--base only makes sense with --event pull_request", param_hint="--base")
    return RunContextIn(
        tenant=options["tenant"],
        repo=options["repo"] or source.resolve().name,
        ref=options["ref"] or _current_branch(source) or "main",
        default_branch=options["default_branch"],
        event=options["event"],
        base_ref=options["base_ref"],
        is_fork=options["fork"],
        pull_request=options["pull_request"],
    )
