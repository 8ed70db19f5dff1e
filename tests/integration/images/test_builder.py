"""Building images: what is reused, what is rebuilt, and what a failure leaves behind.

Every build here is real: busybox base, steps in the sandbox, layers through the layer store.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from tests.integration.images.conftest import Builds

from kiln.errors import ImageBuildFailed
from kiln.images import service
from kiln.metadata import entries

pytestmark = pytest.mark.sandbox

FIVE_LAYERS = """
name: demo
images:
  tools:
    from: busybox
    steps:
      - run: echo one > /one.txt
      - copy: {src: tools/, dst: /opt/tools}
      - env: {PATH: "/opt/tools/bin:$PATH"}
      - run: hello > /hello.txt
      - run: cat /one.txt /hello.txt > /both.txt
jobs:
  build: {image: tools, steps: [{run: both}]}
"""


def _tools(builds: Builds, text: str = "echo hello") -> None:
    builds.write({"tools/bin/hello": f"#!/bin/sh\n{text}\n"}, mode=0o755)


def test_an_unchanged_image_builds_no_layer_the_second_time(builds: Builds) -> None:
    _tools(builds)
    first = builds.build(FIVE_LAYERS, "tools")
    assert (first.layers_built, first.layers_reused, len(first.diff_ids)) == (5, 0, 5)
    again = builds.build(FIVE_LAYERS, "tools")
    assert (again.layers_built, again.layers_reused) == (0, 5)
    assert again.digest == first.digest


def test_a_fresh_runner_reuses_the_layers_of_the_store(builds: Builds, tmp_path: Path) -> None:
    _tools(builds)
    first = builds.build(FIVE_LAYERS, "tools")
    elsewhere = builds.build(FIVE_LAYERS, "tools", state=tmp_path / "other-runner")
    assert (elsewhere.layers_built, elsewhere.digest) == (0, first.digest)
    assert all(layer.is_dir() for layer in elsewhere.rootfs.layers)


def test_touching_a_copy_source_rebuilds_nothing(builds: Builds) -> None:
    _tools(builds)
    first = builds.build(FIVE_LAYERS, "tools")
    hello = builds.project / "tools/bin/hello"
    os.utime(hello, (1, 1))
    os.chmod(hello, 0o775)  # a group-writable checkout: another umask, the same exec bit
    again = builds.build(FIVE_LAYERS, "tools")
    assert (again.layers_built, again.digest) == (0, first.digest)


def test_a_content_change_rebuilds_that_layer_and_the_ones_above_only(builds: Builds) -> None:
    _tools(builds)
    first = builds.build(FIVE_LAYERS, "tools")
    _tools(builds, "echo hello again")
    again = builds.build(FIVE_LAYERS, "tools")
    assert (again.layers_built, again.layers_reused) == (3, 2)  # copy, hello, both
    assert again.diff_ids[:2] == first.diff_ids[:2]
    assert again.diff_ids[2:] != first.diff_ids[2:]


def test_a_rebuilt_layer_with_the_same_bytes_leaves_the_layers_above_cached(builds: Builds) -> None:
    _tools(builds)
    first = builds.build(FIVE_LAYERS, "tools")
    # Another command, the same file: the layer's key changes, its content does not.
    changed = FIVE_LAYERS.replace("run: echo one > /one.txt", "run: printf 'one\\n' > /one.txt")
    again = builds.build(changed, "tools")
    assert (again.layers_built, again.layers_reused) == (1, 4)
    assert again.diff_ids == first.diff_ids


def test_the_same_step_built_twice_from_scratch_gives_the_same_diff_id(
    builds: Builds, tmp_path: Path
) -> None:
    _tools(builds)
    first = builds.build(FIVE_LAYERS, "tools")
    # A second, empty kiln: another database, blob store and runner cache.
    from tests.integration.images.conftest import open_plane

    other = Builds(
        tmp_path / "b", open_plane(tmp_path / "b" / "kiln"), builds.project, tmp_path / "b" / "runner"
    )
    try:
        again = other.build(FIVE_LAYERS, "tools")
    finally:
        other.plane.db.dispose()
    assert again.layers_built == 5
    assert again.diff_ids == first.diff_ids
    assert again.digest == first.digest


def test_a_missing_copy_source_stops_the_build_naming_it(builds: Builds) -> None:
    with pytest.raises(
        ImageBuildFailed, match=r"step 2 \(copy: tools → /opt/tools\): `tools` does not exist"
    ):
        builds.build(FIVE_LAYERS, "tools")


def test_a_failing_step_stops_the_build_with_its_output_and_commits_nothing(builds: Builds) -> None:
    workflow = """
name: demo
images:
  broken:
    from: busybox
    steps:
      - run: echo partial > /partial.txt
      - run: "echo compiling; echo 'cc: error: no input files' >&2; exit 4"
      - run: echo never
jobs:
  a: {image: broken, steps: [{run: x}]}
"""
    with pytest.raises(ImageBuildFailed) as caught:
        builds.build(workflow, "broken")
    message = caught.value.message
    assert "image broken: step 2 (run: echo compiling;" in message
    assert "failed (exit code 4)" in message
    assert "cc: error: no input files" in message
    with builds.plane.db.read_session() as session:
        layers = entries.search(session, tenant="local", kind=service.KIND, statuses=entries.STATUSES)
    by_status = sorted((e.meta.get("step", "")[:6], e.status) for e in layers)
    # The base and step 1 are committed; step 2's claim failed; step 3 was never claimed.
    assert [status for _, status in by_status].count("committed") == 2
    assert [e.status for e in layers if e.failure] == ["failed"]
    assert not any("never" in str(e.meta.get("document")) for e in layers)


def test_a_second_build_of_the_same_key_on_one_machine_waits_for_the_first(builds: Builds) -> None:
    workflow = """
name: demo
images:
  slow:
    from: busybox
    steps:
      - run: sleep 1; echo done > /done.txt
jobs:
  a: {image: slow, steps: [{run: x}]}
"""
    results = []

    def build() -> None:
        results.append(builds.build(workflow, "slow"))

    threads = [threading.Thread(target=build) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Two layers (base, step) built once between them: whoever came second found them built.
    assert sum(r.layers_built for r in results) == 2
    assert sum(r.layers_reused for r in results) == 2
    assert results[0].digest == results[1].digest


def test_env_and_workdir_change_the_config_and_the_keys_of_later_steps(builds: Builds) -> None:
    workflow = """
name: demo
images:
  cfg:
    from: busybox
    steps:
      - env: {GREETING: hi}
      - workdir: /app
      - run: echo "$GREETING from $(pwd)" > out.txt
jobs:
  a: {image: cfg, steps: [{run: x}]}
"""
    built = builds.build(workflow, "cfg")
    assert built.config.env_dict()["GREETING"] == "hi"
    assert built.config.workdir == "/app"
    top = built.rootfs.layers[0]
    assert (top / "app/out.txt").read_text() == "hi from /app\n"
    again = builds.build(workflow.replace("GREETING: hi", "GREETING: hello"), "cfg")
    assert again.layers_built == 1 and again.digest != built.digest
