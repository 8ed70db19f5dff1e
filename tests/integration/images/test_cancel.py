"""Cancelling a run while its job's image builds: the build step dies, nothing is left behind.

The whole path is real: the control plane over HTTP, the runner's executor with its heartbeat (the
cancel reaches it the way it reaches any job), the image provider, the build step in the sandbox.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.integration.sandbox.conftest import _kiln_cgroup_dirs, _mounts_mentioning, _processes_of

from kiln.api.app import create_app
from kiln.api.models import RunContextIn, SubmitIn
from kiln.api.plane import ControlPlane, open_control_plane
from kiln.api.server import BackgroundServer
from kiln.images import service
from kiln.metadata import entries
from kiln.runner import ControlPlaneClient, JobExecutor
from kiln.runner.executor import JobResult
from kiln.runner.worker import ImageProvider  # kiln.images.provider is imported through the runner
from kiln.source import snapshot_source

pytestmark = pytest.mark.sandbox

WORKFLOW = """
name: demo
images:
  {image}:
    from: busybox
    steps:
      - run: echo base-ready > /ready.txt
      - run: echo compiling-forever; sleep 600 & sleep 600
jobs:
  build: {{image: {image}, steps: [{{run: "true"}}]}}
"""


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[ControlPlaneClient, ControlPlane]]:
    (tmp_path / "spool").mkdir()
    plane = open_control_plane(
        f"sqlite:///{tmp_path / 'kiln.db'}",
        (tmp_path / "blobs").as_uri(),
        spool_dir=tmp_path / "spool",
        api_token=secrets.token_urlsafe(16),
        lease_ttl_s=6,  # a beat every 2 s carries the cancel
    )
    server = BackgroundServer(create_app(plane)).start()
    client = ControlPlaneClient(server.url, plane.api_token)
    try:
        yield client, plane
    finally:
        client.close()
        server.stop()
        plane.db.dispose()


def _wait_for(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_cancelling_a_run_stops_its_image_build_and_leaves_nothing_behind(
    served: tuple[ControlPlaneClient, ControlPlane], tmp_path: Path
) -> None:
    client, plane = served
    image = f"spin{secrets.token_hex(4)}"  # names this test's build sandboxes among the machine's
    project = tmp_path / "project"
    project.mkdir()
    (project / "kiln.yml").write_text(WORKFLOW.format(image=image))
    snapshot = snapshot_source(project, tmp_path / "spool")
    client.upload_source(snapshot.info.digest, snapshot.archive)
    run = client.submit(
        SubmitIn(
            context=RunContextIn(repo="demo", ref="main"),
            workflow_text=(project / "kiln.yml").read_text(),
            source_digest=snapshot.info.digest,
        )
    )
    state = tmp_path / "runner"
    lines: list[str] = []
    executor = JobExecutor(
        client, state, echo=lambda _job, text: lines.append(text), images=ImageProvider(client, state)
    )
    lease = client.lease("test-runner", run.run_id)
    assert lease is not None
    results: list[JobResult] = []
    worker = threading.Thread(target=lambda: results.append(executor.execute(lease)))
    worker.start()
    _wait_for(lambda: any("compiling-forever" in line for line in lines), 120, "the build step to start")

    client.cancel_run(run.run_id)
    asked = time.monotonic()
    worker.join(timeout=120)
    stopped_after = time.monotonic() - asked
    assert not worker.is_alive()
    assert results[0].status == "cancelled", results
    # Generous on a shared machine: the heartbeat (every 2 s) carries the cancel, then one kill.
    assert stopped_after < 30, stopped_after
    final = client.get_run(run.run_id)
    assert final.status == "cancelled" and final.jobs[0].attempts[0].status == "cancelled"
    assert "the run was cancelled while the job's image was being built" in "".join(lines)

    # No mount, process, cgroup or scratch dir of the build is left.
    assert _mounts_mentioning(str(tmp_path)) == []
    assert [d for d in _kiln_cgroup_dirs() if f"image-{image}" in d] == []
    assert _processes_of(str(tmp_path), []) == set()
    sandboxes = state / "sandbox" / "sandboxes"
    assert not sandboxes.exists() or list(sandboxes.iterdir()) == []
    # The base and the first step are committed; the cancelled step's claim was abandoned.
    with plane.db.read_session() as session:
        layers = entries.search(session, tenant="local", kind=service.KIND, statuses=entries.STATUSES)
    assert sorted(e.status for e in layers) == ["committed", "committed", "failed"]
    (failed,) = [e for e in layers if e.status == "failed"]
    assert "cancelled" in (failed.failure or "")
