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


def test_a_moved_tag_is_used_only_after_lock_update(kiln, tmp_path: Path, registry: Registry) -> None:
    versions = tmp_path / "versions"
    versions.mkdir()
    (versions / "kiln.yml").write_text(VERSIONS)
    layout = tmp_path / "layout"
    for tag in ("v1", "v2"):
        exported = kiln("images", "export", tag, str(layout), "-f", str(versions / "kiln.yml"))
        assert exported.code == 0, exported.stderr
    name = f"test/base-{uuid.uuid4().hex[:8]}"
    registry.push(layout, "v1", name, "stable")
    first_digest = registry.digest(name, "stable")

    app = tmp_path / "app"
    app.mkdir()
    workflow = app / "kiln.yml"
    workflow.write_text(APP.format(base=registry.ref(name, "stable")))
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


def test_a_run_resolves_a_base_missing_from_the_lock_and_records_it(
    kiln, tmp_path: Path, registry: Registry
) -> None:
    versions = tmp_path / "versions"
    versions.mkdir()
    (versions / "kiln.yml").write_text(VERSIONS)
    layout = tmp_path / "layout"
    assert kiln("images", "export", "v1", str(layout), "-f", str(versions / "kiln.yml")).code == 0
    name = f"test/unlocked-{uuid.uuid4().hex[:8]}"
    registry.push(layout, "v1", name, "1")
    app = tmp_path / "app"
    app.mkdir()
    workflow = app / "kiln.yml"
    workflow.write_text(APP.format(base=registry.ref(name, "1")))
    result = kiln("run", str(workflow), "--json")
    assert result.code == 0, result.stderr
    assert result.summary["jobs"][0]["image"]["lock_changes"]
    assert "kiln.lock: recorded" in result.stderr
    lock = json.loads((app / "kiln.lock").read_text())
    assert lock["bases"][registry.ref(name, "1")]["digest"] == registry.digest(name, "1")
