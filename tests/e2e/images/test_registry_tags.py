"""A registry tag that moves: kiln.lock keeps the digest until ``kiln images lock --update``.

Real parts: Debian's docker-registry on loopback, images pushed with skopeo (made by kiln itself:
busybox plus a file saying which version it is), the kiln CLI in a subprocess.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from tests.fixtures.registry import Registry

pytestmark = pytest.mark.sandbox

VERSIONS = """
name: versions
images:
  v1:
    from: busybox
    steps: [{run: echo v1 > /version}]
  v2:
    from: busybox
    steps: [{run: echo v2 > /version}]
jobs:
  a: {image: v1, steps: [{run: "true"}]}
"""

APP = """
name: app
images:
  app:
    from: {base}
    steps:
      - run: cat /version > /seen
      - run: echo built-on-$(cat /seen) > /app.txt
jobs:
  show:
    image: app
    steps: [{{run: cat /app.txt}}]
"""


def _build(kiln, workflow: Path) -> dict:
    result = kiln("images", "build", "app", "-f", str(workflow), "--json")
    assert result.code == 0, result.stderr
    return json.loads(result.stdout)


def _versions(kiln, tmp_path: Path) -> Path:
    """An OCI layout with tags ``v1`` and ``v2`` (busybox plus a file naming the version)."""
    versions = tmp_path / "versions"
    versions.mkdir()
    (versions / "kiln.yml").write_text(VERSIONS)
    layout = tmp_path / "layout"
    for tag in ("v1", "v2"):
        exported = kiln("images", "export", tag, str(layout), "-f", str(versions / "kiln.yml"))
        assert exported.code == 0, exported.stderr
    return layout


def _app(tmp_path: Path, base: str) -> Path:
    """The app project on ``base``: its workflow file (kiln.lock goes beside it)."""
    app = tmp_path / "app"
    app.mkdir(exist_ok=True)
    workflow = app / "kiln.yml"
    workflow.write_text(APP.format(base=base))
    return workflow


def test_a_moved_tag_is_used_only_after_lock_update(kiln, tmp_path: Path, registry: Registry) -> None:
    layout = _versions(kiln, tmp_path)
    name = f"test/base-{uuid.uuid4().hex[:8]}"
    registry.push(layout, "v1", name, "stable")
    first_digest = registry.digest(name, "stable")

    workflow = _app(tmp_path, registry.ref(name, "stable"))
    app = workflow.parent
    locked = kiln("images", "lock", "-f", str(workflow))
    assert locked.code == 0, locked.stderr
    lock = json.loads((app / "kiln.lock").read_text())
    assert lock["bases"][registry.ref(name, "stable")]["digest"] == first_digest
    first = _build(kiln, workflow)
    assert first["layers_built"] == 4  # two base layers imported, two steps

    registry.push(layout, "v2", name, "stable")  # the tag moves
    assert registry.digest(name, "stable") != first_digest

    # Without an update the locked digest is used: nothing is rebuilt, even on a fresh machine.
    assert _build(kiln, workflow)["layers_built"] == 0
    fresh = kiln("run", str(workflow), "--json", env={"KILN_HOME": str(tmp_path / "fresh-home")})
    assert fresh.code == 0, fresh.stderr
    assert "built-on-v1" in fresh.stderr
    assert fresh.summary["jobs"][0]["image"]["digest"] == first["digest"]

    updated = kiln("images", "lock", "--update", "-f", str(workflow))
    assert updated.code == 0, updated.stderr
    lock = json.loads((app / "kiln.lock").read_text())
    assert lock["bases"][registry.ref(name, "stable")]["digest"] == registry.digest(name, "stable")
    after = _build(kiln, workflow)
    # Only busybox, the bottom layer both versions share, is reused: everything above rebuilds.
    assert (after["layers_built"], after["layers_reused"]) == (3, 1)
    assert after["digest"] != first["digest"]
    run = kiln("run", str(workflow), "--json")
    assert run.code == 0 and "built-on-v2" in run.stderr


def test_a_run_resolves_a_base_the_lock_lacks_and_records_it_saying_so(
    kiln, tmp_path: Path, registry: Registry
) -> None:
    layout = _versions(kiln, tmp_path)
    name = f"test/unlocked-{uuid.uuid4().hex[:8]}"
    registry.push(layout, "v1", name, "1")
    registry.push(layout, "v2", name, "2")

    # No kiln.lock at all: the run resolves the tag, writes the lock and says why.
    workflow = _app(tmp_path, registry.ref(name, "1"))
    app = workflow.parent
    result = kiln("run", str(workflow), "--json")
    assert result.code == 0, result.stderr
    first = registry.digest(name, "1")
    (change,) = result.summary["jobs"][0]["image"]["lock_changes"]
    assert change == f"{registry.ref(name, '1')}: resolved to {first} (no entry in kiln.lock)"
    assert f"kiln.lock: recorded {registry.ref(name, '1')}: resolved to {first}" in result.stderr
    lock = json.loads((app / "kiln.lock").read_text())
    assert lock["bases"][registry.ref(name, "1")]["digest"] == first
    assert "built-on-v1" in result.stderr

    # The workflow now names another tag: its entry is resolved and added, the build follows it.
    workflow.write_text(APP.format(base=registry.ref(name, "2")))
    moved = kiln("run", str(workflow), "--json")
    assert moved.code == 0, moved.stderr
    second = registry.digest(name, "2")
    assert f"kiln.lock: recorded {registry.ref(name, '2')}: resolved to {second}" in moved.stderr
    assert "built-on-v2" in moved.stderr
    lock = json.loads((app / "kiln.lock").read_text())
    assert lock["bases"][registry.ref(name, "2")]["digest"] == second

    # With both in the lock, a run resolves nothing and writes nothing.
    again = kiln("run", str(workflow), "--json")
    assert again.code == 0, again.stderr
    assert again.summary["jobs"][0]["image"]["lock_changes"] == []
    assert "kiln.lock: recorded" not in again.stderr

    # The entry of the tag the workflow no longer names goes with `kiln images lock`.
    pruned = kiln("images", "lock", "-f", str(workflow))
    assert pruned.code == 0, pruned.stderr
    assert f"kiln.lock: {registry.ref(name, '1')}: removed (no image uses it)" in pruned.stderr
    assert list(json.loads((app / "kiln.lock").read_text())["bases"]) == [registry.ref(name, "2")]


def test_a_locked_digest_gone_from_the_registry_is_resolved_again_and_said(
    kiln, tmp_path: Path, registry: Registry
) -> None:
    layout = _versions(kiln, tmp_path)
    name = f"test/gone-{uuid.uuid4().hex[:8]}"
    registry.push(layout, "v1", name, "stable")
    workflow = _app(tmp_path, registry.ref(name, "stable"))
    app = workflow.parent
    assert kiln("images", "lock", "-f", str(workflow)).code == 0
    locked = registry.digest(name, "stable")

    registry.push(layout, "v2", name, "stable")
    registry.delete(name, locked)  # the locked image is gone; the tag names another one now
    # A machine that never built it must fetch the locked digest, and cannot.
    fresh = kiln("run", str(workflow), "--json", env={"KILN_HOME": str(tmp_path / "fresh-home")})
    assert fresh.code == 0, fresh.stderr
    now = registry.digest(name, "stable")
    why = "the locked digest is gone from the registry; resolved again"
    assert f"kiln.lock: recorded {registry.ref(name, 'stable')}: {why}" in fresh.stderr
    assert "built-on-v2" in fresh.stderr
    lock = json.loads((app / "kiln.lock").read_text())
    assert lock["bases"][registry.ref(name, "stable")]["digest"] == now != locked
