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
    return RunContext(
        tenant=ctx.tenant,
        repo=ctx.repo,
        ref=ctx.ref,
        default_branch=ctx.default_branch,
        event=ctx.event,
        base_ref=ctx.base_ref,
        is_fork=ctx.is_fork,
        pull_request=ctx.pull_request,
    )


def context_in(ctx: RunContext) -> RunContextIn:
    """The wire form of a run's context, as a runner receives it with a lease."""
    return RunContextIn.model_construct(  # stored contexts were validated when they were submitted
        tenant=ctx.tenant,
        repo=ctx.repo,
        ref=ctx.ref,
        default_branch=ctx.default_branch,
        event=ctx.event,
        base_ref=ctx.base_ref,
        is_fork=ctx.is_fork,
        pull_request=ctx.pull_request,
    )
