"""Follow a run from the terminal: its logs, prefixed by job, and a live line of progress."""

from __future__ import annotations

import time
from collections.abc import Callable

from rich.console import Console
from rich.live import Live
from rich.text import Text

from kiln.api.models import RunOut
from kiln.runner.client import ControlPlaneClient

__all__ = ["follow_run"]

_FINAL = {"success", "failed", "error", "cancelled"}
_JOB_STYLES = ["cyan", "magenta", "green", "yellow", "blue", "bright_cyan", "bright_magenta"]


class _LinePrinter:
    """Chunks arrive cut anywhere; print whole lines, each with its job's prefix."""

    def __init__(self, console: Console, jobs: list[str]) -> None:
        self._console = console
        self._partial: dict[str, str] = {}
        width = max((len(j) for j in jobs), default=4)
        self._prefix = {
            job: Text(f"{job:<{width}} │ ", style=_JOB_STYLES[i % len(_JOB_STYLES)])
            for i, job in enumerate(jobs)
        }

    def feed(self, job: str, data: str) -> None:
        text = self._partial.pop(job, "") + data
        *lines, rest = text.split("\n")
        for line in lines:
            self._console.print(self._prefix.get(job, Text(f"{job} │ ")) + Text(line), soft_wrap=True)
        if rest:
            self._partial[job] = rest

    def flush(self) -> None:
        for job in list(self._partial):
            self.feed(job, "\n")


def _progress(run: RunOut, started: float) -> Text:
    parts = []
    for job in run.jobs:
        if job.status == "running" and job.attempts:
            steps = job.attempts[-1].steps
            current = next((s for s in reversed(steps) if s.status == "running"), None)
            where = f" step {current.index + 1}: {current.name}" if current else ""
            parts.append(f"{job.name}{where}")
    done = sum(1 for j in run.jobs if j.status in _FINAL | {"skipped"})
    status = ", ".join(parts) or run.status
    return Text(
        f"⏵ {done}/{len(run.jobs)} jobs done · {status} · {time.monotonic() - started:.1f}s", style="dim"
    )


def follow_run(
    client: ControlPlaneClient,
    run_id: str,
    console: Console,
    *,
    poll_s: float = 0.2,
    on_interrupt: Callable[[], None] | None = None,
) -> RunOut:
    """Print the run's logs as they come until the run is final; return its final state."""
    started = time.monotonic()
    run = client.get_run(run_id)
    printer = _LinePrinter(console, [j.name for j in run.jobs])
    cursor = 0
    with Live(_progress(run, started), console=console, transient=True, auto_refresh=False) as live:
        try:
            while True:
                page = client.logs(run_id, after=cursor)
                for line in page.lines:
                    printer.feed(
                        line.job if line.attempt_number == 1 else f"{line.job}#{line.attempt_number}",
                        line.data,
                    )
                cursor = page.cursor
                if page.at_end:
                    break
                run = client.get_run(run_id)
                live.update(_progress(run, started), refresh=console.is_terminal)
                if not page.lines:
                    time.sleep(poll_s)
        except KeyboardInterrupt:
            if on_interrupt is None:
                raise
            on_interrupt()
            run = client.get_run(run_id)
    printer.flush()
    return client.get_run(run_id)
