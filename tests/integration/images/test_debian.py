"""A Debian base from the mirror and an ``apt`` step: locked, reproducible, re-resolved when stale.

The slow image tests (mmdebstrap fetches a minimal Debian, about 30 s; an apt step another 20 s).
The base and the first apt layer are built once for the module, with no kiln.lock. The base is
then handed to a second, otherwise empty kiln, which builds the apt step from scratch: new package
lists, new downloads, the same diff_id. Last, the step asks for other packages than the lock
records: the entry is resolved again and the build says so.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.integration.images.conftest import Builds, open_plane

from kiln.images.builder import BuiltImage
from kiln.images.layers import LayerCache

pytestmark = [pytest.mark.sandbox, pytest.mark.slow]

WORKFLOW = """
name: debian
images:
  tools:
    from: debian:bookworm
    steps:
      - apt: [make]
jobs:
  a: {image: tools, steps: [{run: make --version}]}
"""


@pytest.fixture(scope="module")
def bookworm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Builds, BuiltImage]]:
    """The workflow's image built once, with an empty lock: the builds and what they built."""
    root = tmp_path_factory.mktemp("debian")
    (root / "project").mkdir()
    builds = Builds(root, open_plane(root / "kiln"), root / "project", root / "runner")
    try:
        yield builds, builds.build(WORKFLOW, "tools")
    finally:
        builds.plane.db.dispose()


def test_an_apt_step_on_bookworm_is_locked_and_rebuilds_to_the_same_diff_id(
    bookworm: tuple[Builds, BuiltImage], tmp_path: Path
) -> None:
    builds, first = bookworm
    assert first.layers_built == 2
    base, apt = first.records
    entry = builds.lock.base("debian:bookworm")
    assert entry is not None and entry["inrelease"].startswith("sha256:")
    versions = builds.lock.apt_entry("tools", 0, ["make"])
    assert versions is not None and "make" in versions["versions"]
    # Nothing was locked: both entries were resolved by the build, which said so.
    assert first.lock_changes == (
        "debian:bookworm: resolved (no entry in kiln.lock)",
        "tools/0 (apt): resolved (no entry in kiln.lock)",
    )
    assert "kiln: kiln.lock: debian:bookworm: resolved (no entry in kiln.lock)" in builds.log
    assert (first.rootfs.layers[0] / "usr/bin/make").exists()
    assert not list((first.rootfs.layers[0] / "var/log").rglob("*.log"))  # noise removed

    other = Builds(
        tmp_path / "b", open_plane(tmp_path / "b" / "kiln"), builds.project, tmp_path / "b" / "runner"
    )
    other.lock = builds.lock
    try:
        cache = LayerCache(other.state / "images")
        blob = tmp_path / "base.layer"
        builds.store().download(base.digest, blob)
        cache.install(base.diff_id, blob, base.media_type)
        cache.remember(base)
        again = other.build(WORKFLOW, "tools")
    finally:
        other.plane.db.dispose()
    assert (again.layers_built, again.layers_reused) == (1, 1)
    assert again.records[1].diff_id == apt.diff_id
    assert again.digest == first.digest


def test_an_apt_step_asking_for_other_packages_is_resolved_again_and_says_so(
    bookworm: tuple[Builds, BuiltImage],
) -> None:
    builds, first = bookworm
    locked = builds.lock.apt_entry("tools", 0, ["make"])
    assert locked is not None
    again = builds.build(WORKFLOW.replace("apt: [make]", "apt: [make, hello]"), "tools")
    why = "resolved again (kiln.lock has versions for other packages: make)"
    assert again.lock_changes == (f"tools/0 (apt): {why}",)
    assert any(
        line.startswith(f"kiln: kiln.lock: tools step 1 (apt: make hello): {why}") for line in builds.log
    )
    entry = builds.lock.apt_entry("tools", 0, ["hello", "make"])
    assert entry is not None and "hello" in entry["versions"]
    assert entry["versions"]["make"] == locked["versions"]["make"]
    # The base is reused; the apt layer, whose key holds the versions, is built anew.
    assert (again.layers_built, again.layers_reused) == (1, 1)
    assert again.records[0] == first.records[0]
    assert (again.rootfs.layers[0] / "usr/bin/hello").exists()
