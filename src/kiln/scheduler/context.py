"""What a run is for: tenant, repository, ref and event. Trust and cache scopes derive from it."""

from __future__ import annotations

from dataclasses import dataclass

from kiln.errors import UsageError
from kiln.scheduler.trust import TrustTier, trust_tier_of

__all__ = ["EVENTS", "RunContext"]

EVENTS = ("push", "pull_request")


@dataclass(frozen=True)
class RunContext:
    """Who submitted what, and why.

    Parameters
    ----------
    tenant, repo
        Owner of every entry the run reads or writes; created on first use.
    ref
        The branch (or PR head) the run builds, e.g. ``main`` or ``refs/heads/main``.
    default_branch
        The repository's default branch: a protected ref.
    event
        ``"push"`` or ``"pull_request"``.
    base_ref
        For a pull request, the branch it targets.
    is_fork
        For a pull request, whether its head is in a fork.
    pull_request
        The pull request's number. A fork's caches live in a namespace of that number alone, so
        two forks that push branches of the same name never read each other's entries.
    protected_refs
        Further protected branches besides the default one.

    Raises
    ------
    UsageError
        An unknown event, a fork flag or pull request number on a push, or an empty tenant,
        repository or ref.
    """

    tenant: str
    repo: str
    ref: str
    default_branch: str = "main"
    event: str = "push"
    base_ref: str | None = None
    is_fork: bool = False
    pull_request: int | None = None
    protected_refs: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("tenant", "repo", "ref", "default_branch"):
            if not getattr(self, name):
                raise UsageError(f"the run context needs a {name}")
        if self.event not in EVENTS:
            raise UsageError(f"unknown event {self.event!r}: expected one of {', '.join(EVENTS)}")
        if self.is_fork and self.event != "pull_request":
            raise UsageError("is_fork applies to pull requests only")
        if self.pull_request is not None and (self.event != "pull_request" or self.pull_request < 1):
            raise UsageError("a pull request number is a positive number, on a pull_request event only")
        # Accept any sequence, keep a tuple: the dataclass is frozen and hashable.
        object.__setattr__(self, "protected_refs", tuple(self.protected_refs))

    @property
    def trust_tier(self) -> TrustTier:
        """The run's trust tier (see :func:`kiln.scheduler.trust.trust_tier_of`)."""
        return trust_tier_of(self)
