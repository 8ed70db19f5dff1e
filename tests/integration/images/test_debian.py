"""A Debian base from the mirror and an ``apt`` step: locked, and reproducible from scratch.

The one slow image test (mmdebstrap fetches a minimal Debian, about 30 s; the apt step another
20 s, twice). The base is built once and handed to the second, otherwise empty kiln, which then
builds the apt step from scratch: new package lists, new downloads, the same diff_id.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.integration.images.conftest import Builds, open_plane

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


def test_an_apt_step_on_bookworm_is_locked_and_rebuilds_to_the_same_diff_id(
    builds: Builds, tmp_path: Path
) -> None:
    first = builds.build(WORKFLOW, "tools")
    assert first.layers_built == 2
    base, apt = first.records
    entry = builds.lock.base("debian:bookworm")
    assert entry is not None and entry["inrelease"].startswith("sha256:")
    versions = builds.lock.apt_entry("tools", 0, ["make"])
    assert versions is not None and "make" in versions["versions"]
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
