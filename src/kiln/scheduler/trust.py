"""Trust tiers: which runs may write what others read.

From most to least trusted: ``protected`` (a push to the default branch or a configured protected
branch) > ``branch`` (a push to any other branch) > ``pull_request`` (a PR from a branch of the same
repository) > ``fork_pull_request`` (a PR from a fork). A job never restores a cache entry written by
a lower tier, so a fork can never poison what the default branch restores. A pull request is never
``protected``, whatever its head branch is called: its code has not been merged.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kiln.scheduler.context import RunContext

__all__ = ["TrustTier", "normalise_ref", "trust_tier_of"]


class TrustTier(StrEnum):
    """Trust tiers, most trusted first (declaration order)."""

    PROTECTED = "protected"
    BRANCH = "branch"
    PULL_REQUEST = "pull_request"
    FORK_PULL_REQUEST = "fork_pull_request"

    @property
    def rank(self) -> int:
        """0 for the most trusted tier; larger is less trusted."""
        return list(TrustTier).index(self)

    def may_read_from(self, writer: TrustTier) -> bool:
        """Whether a run of this tier may restore what a run of tier ``writer`` saved."""
        return writer.rank <= self.rank


def normalise_ref(ref: str) -> str:
    """``refs/heads/main`` → ``main``; other refs unchanged."""
    return ref.removeprefix("refs/heads/")


def trust_tier_of(ctx: RunContext) -> TrustTier:
    """Return the trust tier of a run.

    Parameters
    ----------
    ctx
        The run's context.

    Returns
    -------
    TrustTier
        ``protected`` only for pushes to the default branch or a protected ref.
    """
    if ctx.event == "pull_request":
        return TrustTier.FORK_PULL_REQUEST if ctx.is_fork else TrustTier.PULL_REQUEST
    protected = {normalise_ref(ctx.default_branch), *(normalise_ref(r) for r in ctx.protected_refs)}
    return TrustTier.PROTECTED if normalise_ref(ctx.ref) in protected else TrustTier.BRANCH
