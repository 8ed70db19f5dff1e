"""Layer records on the metadata database (SQLite and PostgreSQL): claims, trust, commit races.

The service is called as the HTTP routes call it: with a real attempt's lease, whose run decides
the tenant and trust tier.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.fixtures.uploads import upload_as

from kiln.errors import LeaseLost, NotFound
from kiln.images import wire
from kiln.images.service import LayerService
from kiln.metadata.db import Database
from kiln.scheduler import RunContext, Scheduler
from kiln.storage import open_blob_store

KEY = "sha256:" + "a" * 64
BLOB = b"layer bytes"


@pytest.fixture
def plane(database_url: str, tmp_path: Path) -> Iterator[tuple[Scheduler, LayerService]]:
    db = Database(database_url)
    blobs = open_blob_store((tmp_path / "blobs").as_uri())
    try:
        yield Scheduler(db), LayerService(db, blobs)
    finally:
        db.dispose()


def _attempt(
    scheduler: Scheduler, *, ref: str = "main", event: str = "push", fork: bool = False, tenant: str = "acme"
) -> tuple[str, str]:
    ctx = RunContext(
        tenant=tenant, repo="app", ref=ref, event=event, is_fork=fork, base_ref="main" if fork else None
    )
    run = scheduler.submit_run(
        ctx,
        workflow_name="w",
        jobs=[("build", {"steps": [{"run": "x"}]})],
        workflow_json={},
        workflow_text="",
        source_digest="sha256:" + "0" * 64,
    )
    leased = scheduler.lease_next(f"runner-{run.run_id}", run_id=run.run_id)
    assert leased is not None
    return leased.attempt_id, leased.lease_token


def _claim(svc: LayerService, attempt: tuple[str, str], key: str = KEY) -> wire.ClaimOut:
    with svc.attempt_scope(*attempt) as (session, scope):
        return svc.claim(session, scope, wire.ClaimIn(key=key, document={"step": "x"}, image="tools"))


def _publish(svc: LayerService, attempt: tuple[str, str], entry_id: str, data: bytes = BLOB) -> wire.LayerOut:
    from kiln.images.oci import LAYER_ZSTD, digest_of

    digest = digest_of(data)
    upload_as(svc._db, svc._blobs, *attempt, data)  # as the runner: through the tenant's upload session
    body = wire.PublishIn(
        diff_id=digest, digest=digest, size_bytes=len(data), unpacked_bytes=len(data), media_type=LAYER_ZSTD
    )
    with svc.attempt_scope(*attempt) as (session, scope):
        return svc.publish(session, scope, entry_id, body)


def _lookup(svc: LayerService, attempt: tuple[str, str]) -> dict[str, wire.LayerOut]:
    with svc.attempt_scope(*attempt) as (session, scope):
        return svc.lookup(session, scope, [KEY]).layers


def test_a_second_claim_of_a_key_waits_while_the_first_build_runs(
    plane: tuple[Scheduler, LayerService],
) -> None:
    scheduler, svc = plane
    first, second = _attempt(scheduler), _attempt(scheduler)
    claimed = _claim(svc, first)
    assert claimed.outcome == "claimed"
    busy = _claim(svc, second)
    assert busy.outcome == "busy" and "job 'build'" in (busy.holder or "")
    layer = _publish(svc, first, claimed.entry_id or "")
    done = _claim(svc, second)
    assert done.outcome == "committed" and done.layer is not None and done.layer.digest == layer.digest


def test_a_failed_build_frees_the_key_and_leaves_nothing_to_find(
    plane: tuple[Scheduler, LayerService],
) -> None:
    scheduler, svc = plane
    first, second = _attempt(scheduler), _attempt(scheduler)
    claimed = _claim(svc, first)
    with svc.attempt_scope(*first) as (session, scope):
        svc.abandon(session, scope, claimed.entry_id or "", "step 2 failed")
    assert _lookup(svc, second) == {}
    assert _claim(svc, second).outcome == "claimed"


def test_a_fork_pull_request_layer_is_never_used_by_the_default_branch(
    plane: tuple[Scheduler, LayerService],
) -> None:
    scheduler, svc = plane
    fork = _attempt(scheduler, ref="feature", event="pull_request", fork=True)
    main = _attempt(scheduler)
    _publish(svc, fork, _claim(svc, fork).entry_id or "", b"from a fork")
    assert _lookup(svc, main) == {}
    claimed = _claim(svc, main)  # the default branch builds its own
    assert claimed.outcome == "claimed"
    own = _publish(svc, main, claimed.entry_id or "", b"from main")
    # ...which a fork may then use: a more trusted writer.
    assert (
        _lookup(svc, _attempt(scheduler, ref="other", event="pull_request", fork=True))[KEY].digest
        == own.digest
    )


def test_layer_calls_need_the_attempts_lease(plane: tuple[Scheduler, LayerService]) -> None:
    scheduler, svc = plane
    attempt_id, _ = _attempt(scheduler)
    with pytest.raises(LeaseLost), svc.attempt_scope(attempt_id, "not-the-token"):
        pass
    other = _attempt(scheduler)
    claimed = _claim(svc, _attempt(scheduler))
    with pytest.raises(NotFound), svc.attempt_scope(*other) as (session, scope):
        svc.abandon(session, scope, claimed.entry_id or "", "not mine")


def test_a_layer_cannot_name_a_blob_its_tenant_never_uploaded(plane: tuple[Scheduler, LayerService]) -> None:
    """Knowing another tenant's layer digest is not enough to publish it as one's own (then pull it)."""
    from kiln.errors import Conflict
    from kiln.images.oci import LAYER_ZSTD, digest_of

    scheduler, svc = plane
    upload_as(svc._db, svc._blobs, *_attempt(scheduler, tenant="globex"), BLOB)
    ours = _attempt(scheduler)
    claim = _claim(svc, ours)
    assert claim.entry_id is not None
    digest = digest_of(BLOB)
    body = wire.PublishIn(
        diff_id=digest, digest=digest, size_bytes=len(BLOB), unpacked_bytes=len(BLOB), media_type=LAYER_ZSTD
    )
    with pytest.raises(Conflict, match="not uploaded"), svc.attempt_scope(*ours) as (session, scope):
        svc.publish(session, scope, claim.entry_id, body)
    assert _lookup(svc, _attempt(scheduler)) == {}
