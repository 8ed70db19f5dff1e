from __future__ import annotations

import pytest

from kiln.errors import UsageError
from kiln.scheduler.context import RunContext
from kiln.scheduler.trust import TrustTier, normalise_ref, trust_tier_of


@pytest.mark.parametrize(
    ("context", "tier"),
    [
        (RunContext("t", "r", "main"), TrustTier.PROTECTED),
        (RunContext("t", "r", "refs/heads/main"), TrustTier.PROTECTED),
        (RunContext("t", "r", "trunk", default_branch="trunk"), TrustTier.PROTECTED),
        (RunContext("t", "r", "release/1", protected_refs=("release/1",)), TrustTier.PROTECTED),
        (RunContext("t", "r", "feature"), TrustTier.BRANCH),
        (RunContext("t", "r", "main", event="pull_request", base_ref="main"), TrustTier.PULL_REQUEST),
        (RunContext("t", "r", "feature", event="pull_request", is_fork=True), TrustTier.FORK_PULL_REQUEST),
    ],
)
def test_tiers(context: RunContext, tier: TrustTier) -> None:
    assert trust_tier_of(context) is tier
    assert context.trust_tier is tier


def test_tier_order() -> None:
    order = [TrustTier.PROTECTED, TrustTier.BRANCH, TrustTier.PULL_REQUEST, TrustTier.FORK_PULL_REQUEST]
    assert list(TrustTier) == order
    assert [t.rank for t in order] == [0, 1, 2, 3]
    assert TrustTier.FORK_PULL_REQUEST.may_read_from(TrustTier.PROTECTED)
    assert not TrustTier.PROTECTED.may_read_from(TrustTier.BRANCH)
    assert TrustTier.BRANCH.may_read_from(TrustTier.BRANCH)


def test_normalise_ref() -> None:
    assert normalise_ref("refs/heads/x") == "x"
    assert normalise_ref("refs/tags/v1") == "refs/tags/v1"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tenant": ""}, "tenant"),
        ({"repo": ""}, "repo"),
        ({"ref": ""}, "ref"),
        ({"event": "tag"}, "unknown event"),
        ({"is_fork": True}, "pull requests only"),
        ({"pull_request": 4}, "pull_request event only"),
        ({"event": "pull_request", "pull_request": 0}, "positive number"),
    ],
)
def test_invalid_contexts(kwargs: dict[str, object], message: str) -> None:
    base: dict[str, object] = {"tenant": "t", "repo": "r", "ref": "main"}
    with pytest.raises(UsageError, match=message):
        RunContext(**{**base, **kwargs})  # type: ignore[arg-type]


def test_protected_refs_become_a_tuple() -> None:
    context = RunContext("t", "r", "main", protected_refs=["a", "b"])  # type: ignore[arg-type]
    assert context.protected_refs == ("a", "b")
    assert hash(context)
