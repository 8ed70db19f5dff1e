"""Options and client of the commands that talk to a remote ``kiln server``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from kiln.runner.client import ControlPlaneClient

__all__ = ["remote_client", "server_options"]


def server_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--server`` and ``--token`` (from ``KILN_SERVER`` and ``KILN_TOKEN`` when not given)."""
    command = click.option(
        "--token",
        envvar="KILN_TOKEN",
        required=True,
        help="Your API token (or KILN_TOKEN). Never logged.",
    )(command)
    return click.option(
        "--server",
        "server_url",
        envvar="KILN_SERVER",
        required=True,
        metavar="URL",
        help="The control plane's URL, e.g. https://kiln.internal:8765 (or KILN_SERVER).",
    )(command)


def remote_client(server_url: str, token: str, *, retry_deadline_s: float = 20.0) -> ControlPlaneClient:
    """A client of ``server_url`` presenting ``token``; gives up after ``retry_deadline_s`` of outage."""
    return ControlPlaneClient(server_url, token, retry_deadline_s=retry_deadline_s)
