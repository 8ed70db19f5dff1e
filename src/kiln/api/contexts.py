"""The run context between its wire form (:class:`RunContextIn`) and the scheduler's (:class:`RunContext`).

The API models are shared with runners, which never import the scheduler, so the conversion lives
here, on the control plane's side (and the CLI's, which runs one in-process).
"""

from __future__ import annotations

from kiln.api.models import RunContextIn
from kiln.scheduler.context import RunContext

__all__ = ["context_in", "run_context"]


def run_context(ctx: RunContextIn) -> RunContext:
    """The scheduler's context of a submitted one (its checks raise UsageError)."""
    return RunContext(**ctx.model_dump())  # the same field names, on purpose


def context_in(ctx: RunContext) -> RunContextIn:
    """The wire form of a run's context, as a runner receives it with a lease."""
    # Stored contexts were validated when they were submitted (and older runs predate some checks).
    return RunContextIn.model_construct(**{name: getattr(ctx, name) for name in RunContextIn.model_fields})
