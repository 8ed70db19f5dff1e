"""``kiln submit`` and ``kiln cancel``: runs on a remote ``kiln server``.

``kiln submit`` does what ``kiln run`` does up to the submission (the same snapshot, upload and
run context: :mod:`.submission`, :mod:`.context`), but leaves the jobs to the server's runners.
With ``--wait`` it follows the run like ``kiln run`` (:mod:`.follow`), prints the same summary
(:mod:`.summary`) and exits with the same codes.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from kiln.config import Paths, kiln_home

from .context import context_from_options, parse_secrets, run_context_options
from .follow import follow_run
from .remote import remote_client, server_options
from .submission import submit_workflow, workflow_and_source
from .summary import exit_code_for, run_summary

__all__ = ["commands"]

# Exit code of `kiln submit --wait` interrupted with Ctrl-C: the run goes on on the server.
DETACHED_EXIT = 130


def _submit(print_summary: Callable[[Console, dict[str, Any]], None]) -> click.Command:
    @click.command("submit")
    @workflow_and_source
    @server_options
    @click.option("--wait", is_flag=True, help="Follow the run's logs and exit like `kiln run` does.")
    @click.option(
        "--json", "as_json", is_flag=True, help="Print only JSON on stdout (the summary with --wait)."
    )
    @run_context_options
    @click.pass_context
    def submit(
        ctx: click.Context,
        workflow: Path,
        source: Path | None,
        server_url: str,
        token: str,
        wait: bool,
        as_json: bool,
        **options: Any,
    ) -> None:
        """Submit a workflow to a kiln server; its runners run the jobs.

        The tenant is your token's unless --tenant names another (admins). Exit 0 once submitted;
        with --wait: 0 every job succeeded, 1 a job failed or the run was cancelled, 3 kiln could
        not run a job, 130 interrupted (the run goes on: `kiln cancel RUN` stops it).
        """
        from kiln.spec import load_workflow

        load_workflow(workflow)  # every problem reported before anything is uploaded
        source = source or workflow.resolve().parent
        client = remote_client(server_url, token)
        if ctx.get_parameter_source("tenant") is click.core.ParameterSource.DEFAULT:
            options["tenant"] = client.whoami().tenant or options["tenant"]
        context = context_from_options(source, options)
        console = Console(stderr=as_json, highlight=False, soft_wrap=True)
        run = submit_workflow(
            client,
            workflow,
            workflow.read_text(),
            source,
            context,
            parse_secrets(options["secrets"]),
            Paths(kiln_home()).home / "spool",
            console,
        )
        if not wait:
            if as_json:
                click.echo(json.dumps({"run_id": run.run_id, "status": run.status, "tenant": run.tenant}))
            else:
                console.print(f"run {run.run_id} submitted; follow it with --wait, stop it with kiln cancel")
            return
        try:
            final = follow_run(client, run.run_id, console)
        except KeyboardInterrupt:
            console.print(
                f"\nkiln: run {run.run_id} goes on on the server; `kiln cancel {run.run_id}` stops it"
            )
            sys.exit(DETACHED_EXIT)
        summary = run_summary(final)
        if as_json:
            click.echo(json.dumps(summary, indent=2))
        else:
            print_summary(console, summary)
        sys.exit(exit_code_for(final))

    return submit


@click.command("cancel")
@click.argument("run_id", metavar="RUN")
@server_options
@click.option("--json", "as_json", is_flag=True, help="Print the run as JSON.")
def cancel(run_id: str, server_url: str, token: str, as_json: bool) -> None:
    """Cancel a run: waiting jobs at once; the running job's runner stops its sandbox within seconds."""
    run = remote_client(server_url, token).cancel_run(run_id)
    if as_json:
        click.echo(json.dumps(run_summary(run), indent=2))
    else:
        click.echo(f"run {run.run_id}: {run.status} (cancel requested)")


def commands(
    exits: Callable[[Callable[..., Any]], Callable[..., Any]],
    print_summary: Callable[[Console, dict[str, Any]], None],
) -> list[click.Command]:
    """``submit`` and ``cancel``, their callbacks mapping kiln errors to exit codes.

    ``print_summary`` is the one ``kiln run`` prints its summary with.
    """
    made = [_submit(print_summary), cancel]
    for command in made:
        command.callback = exits(command.callback)  # type: ignore[arg-type]
    return made
