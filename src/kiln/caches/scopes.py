"""Where a run's caches live, what it may read, and from whom (ARCHITECTURE.md §5).

A scope is a string the control plane derives from the run's context, never from anything the
runner says:

- a push: ``branch:<ref>`` (``refs/heads/`` stripped);
- a pull request from the same repository: ``pr:<ref>``;
- a pull request from a fork: ``fork-pr:#<number>``: a namespace of that pull request alone, that
  no push, no other pull request and no other fork ever reads (two forks that both push a branch
  ``patch-1`` are two numbers). The API and the CLI require the number for a fork; a context
  built without one (tools, tests) falls back to ``fork-pr:<ref>``, still apart from every
  branch and same-repository pull request: a fork naming its branch ``main`` writes to
  ``fork-pr:main``, not ``branch:main``.

A run writes to its own scope only. It reads its own scope, then its pull request's base branch,
then the default branch, and among the entries there only those written by a run of its own trust
tier or a more trusted one (:meth:`TrustTier.may_read_from`). The default branch is protected, so
it restores only what protected runs saved: nothing a fork or any pull request wrote can reach it.
"""

from __future__ import annotations

from dataclasses import dataclass

from kiln.scheduler.context import RunContext
from kiln.scheduler.trust import TrustTier, normalise_ref

__all__ = ["CacheScope", "scope_of"]


@dataclass(frozen=True)
class CacheScope:
    """A run's place among cache entries."""

    tenant: str
    repo: str
    own: str
    readable: tuple[str, ...]  # own first, then the base branch, then the default branch
    tier: TrustTier

    def may_read(self, scope: str, writer_tier: str) -> bool:
        """Whether an entry in ``scope`` written by a run of ``writer_tier`` may be restored."""
        try:
            writer = TrustTier(writer_tier)
        except ValueError:
            return False  # an unknown tier is trusted least of all
        return scope in self.readable and self.tier.may_read_from(writer)


def _branch(ref: str) -> str:
    return f"branch:{normalise_ref(ref)}"


def scope_of(ctx: RunContext) -> CacheScope:
    """The scope a run writes to and the scopes it reads, in order."""
    if ctx.is_fork and ctx.pull_request is not None:
        own = f"fork-pr:#{ctx.pull_request}"  # the PR itself, whatever its branch is called
    elif ctx.event == "pull_request":
        own = f"{'fork-pr' if ctx.is_fork else 'pr'}:{normalise_ref(ctx.ref)}"
    else:
        own = _branch(ctx.ref)
    readable = [own]
    if ctx.event == "pull_request" and ctx.base_ref:
        readable.append(_branch(ctx.base_ref))
    readable.append(_branch(ctx.default_branch))
    unique = tuple(dict.fromkeys(readable))
    return CacheScope(tenant=ctx.tenant, repo=ctx.repo, own=own, readable=unique, tier=ctx.trust_tier)
