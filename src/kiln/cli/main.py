"""Command-line entry points. Each command maps kiln errors to the exit-code contract."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from kiln import __version__
from kiln.config import Paths, kiln_home
from kiln.errors import KilnError, WorkflowInvalid

from .artifacts import summary_lines as artifact_summary_lines
from .artifacts import with_exit_codes as artifact_commands
from .cache import summary_lines as cache_summary_lines
from .cache import with_exit_codes as cache_commands
from .context import context_from_options, parse_secrets, run_context_options
from .gc import gc_command
from .images import images_commands, record_lock_updates
from .images import summary_lines as image_summary_lines
from .service import with_exit_codes as service_commands
from .submission import workflow_and_source
from .submit import commands as submit_commands
from .summary import exit_code_for, run_summary
from .tokens import commands as token_commands

__all__ = ["main"]

_err = Console(stderr=True, highlight=False, soft_wrap=True)


def _report(exc: KilnError) -> None:
    if isinstance(exc, WorkflowInvalid):
        for problem in exc.problems:
            _err.print(str(problem), markup=False)
        _err.print(f"[red]{len(exc.problems)} problem(s); the workflow was not run[/red]")
    else:
        _err.print(f"[red]kiln: error:[/red] {exc.message}", markup=True)


def _exits(command: Callable[..., Any]) -> Callable[..., Any]:
    """Translate KilnError into its message and exit code; anything else is a bug and shows its traceback."""

    @wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except KilnError as exc:
            logging.getLogger("kiln.cli").debug("%s failed", command.__name__, exc_info=True)
            _report(exc)
            sys.exit(exc.exit_code)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="kiln")
@click.option("-v", "--verbose", count=True, help="More logging on stderr (-vv for debug).")
def cli(verbose: int) -> None:
    """kiln: sandboxed CI workflows whose cache hits never change a result."""
    logging.basicConfig(
        level=[logging.WARNING, logging.INFO, logging.DEBUG][min(verbose, 2)],
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


@cli.command()
@click.argument("workflow", type=click.Path(dir_okay=False, path_type=Path), default="kiln.yml")
@_exits
def validate(workflow: Path) -> None:
    """Check a workflow file; print every problem as FILE:LINE:COL: message. Exit 0 or 2."""
    from kiln.spec import load_workflow

    wf = load_workflow(workflow)
    click.echo(f"{workflow}: ok ({len(wf.jobs)} jobs)")


@cli.command()
def schema() -> None:
    """Print the JSON Schema of the workflow format (for editors, e.g. yaml-language-server)."""
    from kiln.spec import workflow_json_schema

    click.echo(json.dumps(workflow_json_schema(), indent=2))


@cli.command()
@workflow_and_source
@click.option("--json", "as_json", is_flag=True, help="Print only the run summary as JSON on stdout.")
@run_context_options
@_exits
def run(workflow: Path, source: Path | None, as_json: bool, **options: Any) -> None:
    """Run a workflow here: control plane and runner in this process, jobs in sandboxes."""
    from kiln.spec import load_workflow

    from .local_run import run_locally

    load_workflow(workflow)  # every problem reported before anything starts
    source = source or workflow.resolve().parent
    context = context_from_options(source, options)
    console = (
        Console(stderr=True, highlight=False, soft_wrap=True)
        if as_json
        else Console(highlight=False, soft_wrap=True)
    )
    final = run_locally(
        workflow,
        workflow.read_text(),
        source,
        context,
        parse_secrets(options["secrets"]),
        Paths(kiln_home()),
        console,
    )
    record_lock_updates(final, workflow, console)
    summary = run_summary(final)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        _print_summary(console, summary)
    sys.exit(exit_code_for(final))


def _print_summary(console: Console, summary: dict[str, Any]) -> None:
    colors = {"success": "green", "failed": "red", "error": "red", "skipped": "yellow", "cancelled": "yellow"}
    console.print()
    for job in summary["jobs"]:
        color = colors.get(job["status"], "white")
        attempts = f", {job['attempts']} attempts" if job["attempts"] > 1 else ""
        console.print(
            f"[{color}]{job['status']:>9}[/{color}]  {job['name']}  ({job['duration_s']:.2f}s{attempts})"
        )
        for step in job["steps"]:
            detail = f" — {step['killed_by']}" if step["killed_by"] else ""
            if step["exit_code"] not in (None, 0) and not detail:
                detail = f" — exit code {step['exit_code']}"
            console.print(
                f"           · {step['name']}: {step['status']} ({step['duration_s']:.2f}s){detail}"
            )
        for line in image_summary_lines(job) + cache_summary_lines(job) + artifact_summary_lines(job):
            console.print(f"           · {line}", markup=False)
        if job["error"] and job["status"] != "success":
            console.print(f"           [dim]{job['error']}[/dim]")
    color = colors.get(summary["status"], "white")
    console.print(f"run {summary['run_id']}: [{color}]{summary['status']}[/{color}]")


for _command in [
    *service_commands(_exits),
    *submit_commands(_exits, _print_summary),
    *token_commands(_exits),
]:
    cli.add_command(_command)
cli.add_command(cache_commands(_exits))
cli.add_command(artifact_commands(_exits))
cli.add_command(images_commands(_exits))
gc_command.callback = _exits(gc_command.callback)  # type: ignore[arg-type]
cli.add_command(gc_command)


def main() -> None:
    cli(prog_name="kiln")
