"""Scopes and the trust matrix: who may restore what whom saved (ARCHITECTURE.md §5)."""

from __future__ import annotations

import itertools

import pytest

from kiln.caches.scopes import scope_of
from kiln.scheduler import RunContext, TrustTier

# One run of each trust tier, all in one repository whose default branch is main.
RUNS = {
    TrustTier.PROTECTED: RunContext("t", "r", "main"),
    TrustTier.BRANCH: RunContext("t", "r", "feature"),
    TrustTier.PULL_REQUEST: RunContext("t", "r", "feature", event="pull_request", base_ref="main"),
    TrustTier.FORK_PULL_REQUEST: RunContext(
        "t", "r", "patch-1", event="pull_request", base_ref="main", is_fork=True, pull_request=12
    ),
}


def test_each_run_has_the_tier_it_stands_for() -> None:
    assert {tier: scope_of(ctx).tier for tier, ctx in RUNS.items()} == {tier: tier for tier in RUNS}


def test_scopes_and_their_read_order() -> None:
    assert scope_of(RUNS[TrustTier.PROTECTED]).readable == ("branch:main",)
    assert scope_of(RUNS[TrustTier.BRANCH]).readable == ("branch:feature", "branch:main")
    assert scope_of(RUNS[TrustTier.PULL_REQUEST]).readable == ("pr:feature", "branch:main")
    pr_to_dev = RunContext("t", "r", "f", event="pull_request", base_ref="refs/heads/dev")
    assert scope_of(pr_to_dev).readable == ("pr:f", "branch:dev", "branch:main")
    assert scope_of(RUNS[TrustTier.FORK_PULL_REQUEST]).own == "fork-pr:#12"


@pytest.mark.parametrize(("writer", "reader"), list(itertools.product(RUNS, RUNS)), ids=lambda t: t.value)
def test_the_trust_matrix(writer: TrustTier, reader: TrustTier) -> None:
    """A reader restores what a writer saved only from a scope it reads, never from a lower tier."""
    written = scope_of(RUNS[writer])
    reading = scope_of(RUNS[reader])
    allowed = reading.may_read(written.own, writer.value)
    same_scope_or_trusted_source = written.own in reading.readable
    assert allowed == (same_scope_or_trusted_source and writer.rank <= reader.rank)
    if writer.rank > reader.rank:
        assert not allowed, f"a {reader} run must never restore what a {writer} run saved"


@pytest.mark.parametrize("fork_ref", ["main", "refs/heads/main", "feature", "branch:main"])
def test_a_fork_named_like_the_default_branch_writes_to_its_own_namespace(fork_ref: str) -> None:
    fork = scope_of(RunContext("t", "r", fork_ref, event="pull_request", base_ref="main", is_fork=True))
    default = scope_of(RunContext("t", "r", "main"))
    assert fork.own.startswith("fork-pr:")
    assert fork.own not in default.readable
    assert not default.may_read(fork.own, fork.tier.value)
    # Even an entry placed in the default branch's scope with the fork's tier is never restored.
    assert not default.may_read("branch:main", fork.tier.value)


def test_a_fork_pr_reads_its_own_scope_and_never_another_prs() -> None:
    fork = scope_of(RUNS[TrustTier.FORK_PULL_REQUEST])
    fork_pr = {"event": "pull_request", "base_ref": "main", "is_fork": True}
    other = scope_of(RunContext("t", "r", "patch-2", **fork_pr, pull_request=13))
    # Two forks that both push a branch called patch-1: two pull requests, two namespaces.
    same_branch = scope_of(RunContext("t", "r", "patch-1", **fork_pr, pull_request=14))
    later_push = scope_of(RunContext("t", "r", "patch-1-renamed", **fork_pr, pull_request=12))
    assert fork.may_read(fork.own, "fork_pull_request")
    assert later_push.may_read(fork.own, "fork_pull_request")  # the same PR, whatever its branch
    for stranger in (other, same_branch):
        assert not stranger.may_read(fork.own, "fork_pull_request")


def test_an_unknown_writer_tier_is_never_trusted() -> None:
    assert not scope_of(RUNS[TrustTier.FORK_PULL_REQUEST]).may_read("fork-pr:#12", "root")
