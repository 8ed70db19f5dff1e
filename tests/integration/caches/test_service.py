"""The control plane's cache service on a real database (SQLite and PostgreSQL) and blob store.

Runs are submitted with different contexts, their jobs leased, and each attempt saves or restores
through :class:`CacheService` exactly as the HTTP routes call it. Scope and trust always come from
the attempt's run: the tests vary the run, never anything a runner could claim.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import tarfile
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest
import zstandard
from tests.fixtures.uploads import upload_as

from kiln.caches import wire
from kiln.caches.archive import pack_cache
from kiln.caches.keys import KilnInputs, key_document, key_of, version_of
from kiln.caches.manifest import CacheRoot, scan_roots
from kiln.caches.secretscan import SecretScanner
from kiln.caches.service import CacheService
from kiln.errors import Conflict, LeaseLost, NotFound, UsageError
from kiln.metadata.db import Database
from kiln.scheduler import RunContext, Scheduler, TrustTier
from kiln.storage import open_blob_store

IMAGE = "sha256:" + "1" * 64
CONTEXTS = {
    TrustTier.PROTECTED: {"ref": "main"},
    TrustTier.BRANCH: {"ref": "feature"},
    TrustTier.PULL_REQUEST: {"ref": "feature", "event": "pull_request", "base_ref": "main"},
    TrustTier.FORK_PULL_REQUEST: {
        "ref": "patch-1",
        "event": "pull_request",
        "base_ref": "main",
        "is_fork": True,
        "pull_request": 12,
    },
}


def _job(
    cache_type: str = "deps", *, name: str = "c", policy: str = "pull-push", restore_keys: bool = False
) -> dict:
    cache: dict = {"name": name, "type": cache_type, "paths": ["build"], "policy": policy}
    if cache_type == "build":
        cache["key"] = {"files": ["src/**"]}
    elif restore_keys:
        cache["restore-keys"] = True
    return {"steps": [{"run": "true"}], "caches": [cache]}


@dataclass
class Attempt:
    attempt_id: str
    token: str
    run_id: str


@dataclass
class World:
    scheduler: Scheduler
    service: CacheService
    tmp: Path

    def attempt(self, tier: TrustTier = TrustTier.PROTECTED, job: dict | None = None, **context) -> Attempt:
        fields = {**CONTEXTS[tier], **context}
        run = self.scheduler.submit_run(
            RunContext(**{"tenant": "acme", "repo": "web", **fields}),
            workflow_name="ci",
            jobs=[("build", job or _job())],
            workflow_json={"name": "ci"},
            workflow_text="name: ci\n",
            source_digest="sha256:" + "0" * 64,
        )
        leased = self.scheduler.lease_next("runner", run_id=run.run_id)
        assert leased is not None
        return Attempt(leased.attempt_id, leased.lease_token, run.run_id)

    def request(
        self, cache_type: str = "deps", *, salt: str = "", name: str = "c", image: str = IMAGE
    ) -> wire.CacheKeyIn:
        kiln = KilnInputs(image, "linux/x86_64", cache_type, "kiln.tar+zstd.v1", ("build",))
        doc = key_document(kiln, patterns=[], files={}, env={}, values=[salt] if salt else [])
        return wire.CacheKeyIn(
            name=name,
            type=cache_type,
            key=key_of(doc),
            version=version_of(doc),
            document=doc,
            paths=["build"],
        )

    def save(self, attempt: Attempt, request: wire.CacheKeyIn, content: str = "v1") -> str:
        """Pack a real archive holding ``content``, store it, reserve and commit; return the outcome."""
        root = self.tmp / f"src-{attempt.attempt_id}-{content}"
        (root / "build").mkdir(parents=True, exist_ok=True)
        (root / "build" / "out").write_text(content)
        scan = scan_roots([CacheRoot("build", "workspace/build", root, "build")], SecretScanner({}))
        archive = root / "c.tar.zst"
        with archive.open("wb") as out:
            info = pack_cache(scan, out)
        unpacked = info.unpacked_size + len(scan.manifest.to_json())
        return self.store(attempt, request, archive, scan.manifest.content_digest(), unpacked)

    def store(
        self, attempt: Attempt, request: wire.CacheKeyIn, archive: Path, content_digest: str, unpacked: int
    ) -> str:
        """Reserve, upload and commit the archive file as the attempt's save; return the outcome."""
        info = _Blob(f"sha256:{hashlib.sha256(archive.read_bytes()).hexdigest()}", archive.stat().st_size)
        reserved = self.service.reserve(
            attempt.attempt_id,
            attempt.token,
            wire.ReserveIn(
                **request.model_dump(), content_digest=content_digest, unpacked_bytes=unpacked, files=1
            ),
        )
        if reserved.outcome != "reserved":
            return {"exists": "lost-race", "unchanged": "unchanged"}[reserved.outcome]
        assert reserved.entry_id
        self.service.uploading(attempt.attempt_id, attempt.token, reserved.entry_id, _commit(info))
        upload_as(self.scheduler.db, self.service._blobs, attempt.attempt_id, attempt.token, archive)
        return self.service.commit(attempt.attempt_id, attempt.token, reserved.entry_id, _commit(info)).save

    def lookup(self, attempt: Attempt, request: wire.CacheKeyIn) -> wire.LookupResultOut:
        return self.service.lookup(
            attempt.attempt_id, attempt.token, wire.LookupIn(caches=[request])
        ).results[0]


@dataclass(frozen=True)
class _Blob:
    digest: str
    size: int


def _commit(info) -> wire.CommitIn:
    return wire.CommitIn(digest=info.digest, size_bytes=info.size)


@pytest.fixture
def world(database: Database, tmp_path: Path) -> World:
    store = open_blob_store((tmp_path / "blobs").as_uri())
    return World(Scheduler(database), CacheService(database, store), tmp_path)


@pytest.mark.parametrize(("writer", "reader"), list(itertools.product(TrustTier, TrustTier)), ids=str)
def test_the_trust_matrix_on_real_entries(world: World, writer: TrustTier, reader: TrustTier) -> None:
    request = world.request()
    assert world.save(world.attempt(writer), request) == "saved"
    result = world.lookup(world.attempt(reader), request)
    # Every reader reads the default branch; only a run of the same context reads the others.
    same_context = writer == reader
    readable_scope = same_context or writer is TrustTier.PROTECTED
    expected = readable_scope and writer.rank <= reader.rank
    assert (result.restore == "hit") == expected, (writer, reader, result)


def test_a_fork_cannot_make_the_default_branch_restore_what_it_wrote(world: World) -> None:
    request = world.request()  # the same name and key the default branch uses
    for ref in ("main", "refs/heads/main", "feature", "branch:main", "pr:main"):
        fork = world.attempt(TrustTier.FORK_PULL_REQUEST, ref=ref, base_ref="main")
        assert world.save(fork, request, content=f"poison via {ref}") == "saved"
    default = world.attempt(TrustTier.PROTECTED)
    assert world.lookup(default, request).restore == "miss"
    # Nor does any other tier, even on the branch the fork named itself after.
    for tier in (TrustTier.BRANCH, TrustTier.PULL_REQUEST):
        assert world.lookup(world.attempt(tier), request).restore == "miss"
    # ...and not through a fallback either.
    fallback = world.request(salt="other")
    assert (
        world.lookup(world.attempt(TrustTier.PROTECTED, job=_job(restore_keys=True)), fallback).restore
        == "miss"
    )
    # The fork's own PR does see its entry.
    again = world.attempt(TrustTier.FORK_PULL_REQUEST, ref="main", base_ref="main")
    assert world.lookup(again, request).restore == "hit"


def test_a_pr_restores_the_base_branch_before_the_default_branch(world: World) -> None:
    request = world.request()
    world.save(world.attempt(TrustTier.PROTECTED), request, content="main")
    world.save(world.attempt(TrustTier.PROTECTED, ref="dev", protected_refs=("dev",)), request, content="dev")
    pr = world.attempt(TrustTier.PULL_REQUEST, ref="f", base_ref="dev")
    assert world.lookup(pr, request).entry.scope == "branch:dev"


def test_deps_restore_takes_the_newest_entry_of_the_key_and_saves_only_new_content(world: World) -> None:
    request = world.request()
    assert world.save(world.attempt(), request, content="one") == "saved"
    assert world.save(world.attempt(), request, content="two") == "saved"
    assert world.save(world.attempt(), request, content="two") == "unchanged"
    found = world.lookup(world.attempt(), request)
    entries = world.service.list_entries("acme").entries
    assert len(entries) == 2 and found.entry.entry_id == entries[0].entry_id


def test_fallback_for_deps_with_restore_keys_never_for_build(world: World) -> None:
    deps_old, deps_new = world.request(), world.request(salt="lockfile changed")
    world.save(world.attempt(), deps_old)
    attempt = world.attempt(job=_job(restore_keys=True))
    result = world.lookup(attempt, deps_new)
    assert (result.restore, result.entry.key) == ("fallback", deps_old.key)
    without = world.lookup(world.attempt(), deps_new)
    assert without.restore == "miss"

    build_job = _job("build")
    build_old, build_new = world.request("build"), world.request("build", salt="source changed")
    world.save(world.attempt(job=build_job), build_old)
    assert world.lookup(world.attempt(job=build_job), build_new).restore == "miss"


@pytest.mark.parametrize("cache_type", ["deps", "compiler"])
def test_an_exact_key_in_any_scope_wins_over_a_fallback_and_a_fallback_takes_the_newest(
    world: World, cache_type: str
) -> None:
    job = _job(cache_type, restore_keys=True)
    wanted, older, newer = (world.request(cache_type, salt=s) for s in ("wanted", "older", "newer"))
    world.save(world.attempt(job=job), wanted, content="main")
    world.save(world.attempt(TrustTier.BRANCH, job=job), older, content="older")
    world.save(world.attempt(TrustTier.BRANCH, job=job), newer, content="newer")
    # Newest of all in the branch's own scope, but of another image: never a fallback candidate.
    other_image = world.request(cache_type, salt="newest", image="sha256:" + "2" * 64)
    world.save(world.attempt(TrustTier.BRANCH, job=job), other_image, content="other image")

    exact = world.lookup(world.attempt(TrustTier.BRANCH, job=job), wanted)
    assert (exact.restore, exact.entry.scope, exact.entry.key) == ("hit", "branch:main", wanted.key)
    unknown = world.request(cache_type, salt="unknown")
    fallback = world.lookup(world.attempt(TrustTier.BRANCH, job=job), unknown)
    assert (fallback.restore, fallback.entry.scope, fallback.entry.key) == (
        "fallback",
        "branch:feature",
        newer.key,
    )
    on_main = world.lookup(world.attempt(job=job), unknown)
    assert (on_main.restore, on_main.entry.key) == ("fallback", wanted.key)


def test_a_build_key_is_written_once_and_the_loser_reports_lost_race(world: World) -> None:
    job = _job("build")
    request = world.request("build")
    first, second = world.attempt(job=job), world.attempt(job=job)
    outcomes: list[str] = []
    barrier = threading.Barrier(2)

    def save(attempt: Attempt, content: str) -> None:
        barrier.wait()
        outcomes.append(world.save(attempt, request, content=content))

    threads = [threading.Thread(target=save, args=(a, c)) for a, c in ((first, "A"), (second, "B"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["lost-race", "saved"]
    (entry,) = world.service.list_entries("acme").entries
    assert world.service._verify(_record(world, entry.entry_id)) == (None, False)  # the winner's is whole
    assert world.save(world.attempt(job=job), request, content="C") == "lost-race"  # write-once, later too


def _record(world: World, entry_id: str):
    from kiln.metadata import entries

    with world.service._db.read_session() as session:
        return entries.get(session, entry_id)


def test_the_runner_cannot_invent_or_retype_a_cache(world: World) -> None:
    attempt = world.attempt()
    with pytest.raises(UsageError, match="declares no cache named 'other'"):
        world.lookup(attempt, world.request(name="other"))
    with pytest.raises(UsageError, match="declared as deps"):
        world.lookup(attempt, world.request("build"))


def test_policy_is_enforced_by_the_server(world: World) -> None:
    pull_only = world.attempt(job=_job(policy="pull"))
    with pytest.raises(UsageError, match="policy: pull"):
        world.save(pull_only, world.request())
    push_only = world.attempt(job=_job(policy="push"))
    with pytest.raises(UsageError, match="policy: push"):
        world.lookup(push_only, world.request())


def test_a_stale_lease_token_is_refused(world: World) -> None:
    attempt = world.attempt()
    with pytest.raises(LeaseLost):
        world.service.lookup(attempt.attempt_id, "not-the-token", wire.LookupIn(caches=[world.request()]))


def test_a_lying_runner_cannot_quarantine_a_good_entry_but_a_bad_one_is(world: World) -> None:
    request = world.request()
    world.save(world.attempt(), request)
    reader = world.attempt(TrustTier.BRANCH)
    entry = world.lookup(reader, request).entry
    answer = world.service.report_corrupt(
        reader.attempt_id,
        reader.token,
        entry.entry_id,
        wire.CorruptIn(name="c", reason="it is bad, trust me"),
    )
    assert not answer.quarantined
    assert world.lookup(world.attempt(), request).restore == "hit"
    # Now really damage the blob on disk: the server's own check fails and hides the entry.
    blob = next((world.tmp / "blobs").rglob(entry.digest.removeprefix("sha256:")))
    blob.chmod(0o644)
    blob.write_bytes(b"garbage")
    answer = world.service.report_corrupt(
        reader.attempt_id, reader.token, entry.entry_id, wire.CorruptIn(name="c", reason="digest mismatch")
    )
    assert answer.quarantined
    assert world.lookup(world.attempt(), request).restore == "miss"


def _hostile_archive(path: Path) -> Path:
    """A well-formed tar+zstd whose member lies outside the cache's paths (``build``)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("workspace/src/main.c")
        info.size = 9
        tar.addfile(info, io.BytesIO(b"int evil;"))
    path.write_bytes(zstandard.ZstdCompressor().compress(raw.getvalue()))
    return path


def test_an_entry_with_a_hostile_archive_is_quarantined_on_report(world: World) -> None:
    """Its blob is whole (the digest verifies), but its content fails the restore's checks."""
    request = world.request()
    archive = _hostile_archive(world.tmp / "hostile.tar.zst")
    assert world.store(world.attempt(), request, archive, "sha256:" + "e" * 64, 9) == "saved"
    reader = world.attempt()
    entry = world.lookup(reader, request).entry
    answer = world.service.report_corrupt(
        reader.attempt_id, reader.token, entry.entry_id, wire.CorruptIn(name="c", reason="unsafe entry")
    )
    assert answer.quarantined and "outside the cache's paths" in answer.message
    assert world.lookup(world.attempt(), request).restore == "miss"


def test_explain_names_what_differs_and_why_an_exact_entry_was_not_restored(world: World) -> None:
    request = world.request()
    world.save(world.attempt(TrustTier.FORK_PULL_REQUEST), request)
    default = world.attempt()
    world.lookup(default, request)
    answer = world.service.explain("acme", "build", "c")
    assert answer.restore == "miss"
    assert any("written by a fork_pull_request run" in note for note in answer.notes) or any(
        "is not one this run reads" in note for note in answer.notes
    )
    world.save(world.attempt(), world.request(salt="v1"))
    world.lookup(world.attempt(), world.request(salt="v2"))
    answer = world.service.explain("acme", "build", "c")
    assert [i.name for i in answer.inputs if i.differs] == ["values"]
    assert answer.nearest is not None and answer.nearest.scope == "branch:main"


def test_remove_hides_entries_of_the_tenant_only(world: World) -> None:
    world.save(world.attempt(), world.request())
    assert world.service.remove("someone-else", wire.RemoveIn(all=True)).removed == 0
    assert world.service.remove("acme", wire.RemoveIn(name="c")).removed == 1
    assert world.service.list_entries("acme").entries == []


def test_remove_by_id_takes_only_the_tenants_cache_entries(world: World) -> None:
    world.save(world.attempt(), world.request(salt="a"))
    world.save(world.attempt(), world.request(salt="b"))
    newest, oldest = world.service.list_entries("acme").entries
    with pytest.raises(NotFound):
        world.service.remove("someone-else", wire.RemoveIn(entry_ids=[newest.entry_id]))
    with pytest.raises(UsageError, match="name entries to remove"):
        world.service.remove("acme", wire.RemoveIn())
    assert world.service.remove("acme", wire.RemoveIn(entry_ids=[newest.entry_id])).removed == 1
    assert [e.entry_id for e in world.service.list_entries("acme").entries] == [oldest.entry_id]
    assert world.lookup(world.attempt(), world.request(salt="b")).restore == "miss"
    assert world.lookup(world.attempt(), world.request(salt="a")).restore == "hit"


def test_an_entry_expires_a_week_after_its_last_restore(database: Database, tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from kiln.metadata import entries

    now = [1_800_000_000.0]
    store = open_blob_store((tmp_path / "blobs").as_uri())
    world = World(Scheduler(database), CacheService(database, store, clock=lambda: now[0]), tmp_path)
    request = world.request()
    world.save(world.attempt(), request)
    day = 86_400.0
    now[0] += 6 * day
    assert world.lookup(world.attempt(), request).restore == "hit"  # restored: a week more from here

    def expire(at_days: float) -> list:
        with database.session() as session:
            when = datetime.fromtimestamp(1_800_000_000.0 + at_days * day, UTC)
            return entries.expire_due(session, now=when)

    assert expire(8) == []
    assert [e.kind for e in expire(13.5)] == ["cache"]
    assert world.lookup(world.attempt(), request).restore == "miss"


def test_a_cache_entry_cannot_name_a_blob_its_tenant_never_uploaded(world: World) -> None:
    """Knowing another tenant's digest is not enough to commit a cache entry on it (then read it)."""
    theirs = world.attempt(tenant="globex")
    secret_bytes = b"globex's private dependency tree"
    digest, size = upload_as(
        world.scheduler.db, world.service._blobs, theirs.attempt_id, theirs.token, secret_bytes
    )

    ours = world.attempt()
    request = world.request()
    reserved = world.service.reserve(
        ours.attempt_id,
        ours.token,
        wire.ReserveIn(
            **request.model_dump(), content_digest="sha256:" + "1" * 64, unpacked_bytes=size, files=1
        ),
    )
    assert reserved.outcome == "reserved" and reserved.entry_id
    claimed = wire.CommitIn(digest=digest, size_bytes=size)
    world.service.uploading(ours.attempt_id, ours.token, reserved.entry_id, claimed)
    with pytest.raises(Conflict, match="not uploaded"):
        world.service.commit(ours.attempt_id, ours.token, reserved.entry_id, claimed)
    assert world.service.list_entries("acme").entries == []
