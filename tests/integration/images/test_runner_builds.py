"""Images built as a runner builds them: for a leased job, over HTTP, with the job's lease.

The whole path is real: the control plane over HTTP, the image provider with its remote layer
store (claims fenced by the attempt's lease), build steps in the sandbox; for the cancel, the
runner's executor and its heartbeat, which carries the cancel as it does for any job.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests.integration.sandbox.conftest import _kiln_cgroup_dirs, _mounts_mentioning, _processes_of

from kiln.api.app import create_app
from kiln.api.models import LeaseOut, RunContextIn, RunOut, SubmitIn
from kiln.api.plane import ControlPlane, open_control_plane
from kiln.api.server import BackgroundServer
from kiln.images import service
from kiln.images.cancel import BuildCancel
from kiln.metadata import entries
from kiln.metadata.entries import EntryRecord
from kiln.runner import ControlPlaneClient, JobExecutor
from kiln.runner.executor import JobResult
from kiln.runner.worker import ImageProvider  # kiln.images.provider is imported through the runner
from kiln.sandbox import RootFS
from kiln.source import snapshot_source
from kiln.spec import Job

pytestmark = pytest.mark.sandbox


@dataclass
class Served:
    client: ControlPlaneClient
    plane: ControlPlane
    root: Path

    def submit(self, workflow: str) -> RunOut:
        project = self.root / f"project-{secrets.token_hex(4)}"
        project.mkdir()
        (project / "kiln.yml").write_text(workflow)
        snapshot = snapshot_source(project, self.root / "spool")
        self.client.upload_source(snapshot.info.digest, snapshot.archive)
        return self.client.submit(
            SubmitIn(
                context=RunContextIn(repo="demo", ref="main"),
                workflow_text=workflow,
                source_digest=snapshot.info.digest,
            )
        )

    def lease(self, run: RunOut, runner_id: str) -> LeaseOut:
        lease = self.client.lease(runner_id, run.run_id)
        assert lease is not None
        return lease

    def layers(self) -> list[EntryRecord]:
        with self.plane.db.read_session() as session:
            return entries.search(session, tenant="local", kind=service.KIND, statuses=entries.STATUSES)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    (tmp_path / "spool").mkdir()
    plane = open_control_plane(
        f"sqlite:///{tmp_path / 'kiln.db'}",
        (tmp_path / "blobs").as_uri(),
        spool_dir=tmp_path / "spool",
        api_token=secrets.token_urlsafe(16),
        lease_ttl_s=30,  # a beat every 3 s carries a cancel
    )
    server = BackgroundServer(create_app(plane)).start()
    client = ControlPlaneClient(server.url, plane.api_token)
    try:
        yield Served(client, plane, tmp_path)
    finally:
        client.close()
        server.stop()
        plane.db.dispose()


def _wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


GATED = """
name: demo
images:
  gated:
    from: busybox
    steps:
      - run: |
          i=0
          while [ ! -e /gate/open ] && [ $i -lt 1200 ]; do sleep 0.1; i=$((i + 1)); done
          echo built > /built.txt
        cache-mounts: [/gate]
jobs:
  build: {image: gated, steps: [{run: cat /built.txt}]}
"""


def test_two_runners_building_one_image_build_each_layer_once_the_second_waits(served: Served) -> None:
    # Two runners (their own state: layer caches, sandboxes) with one job each, of two runs. The
    # first holds its build step open until the second is seen waiting: no timing decides who
    # builds. The gate is a cache mount, which is never part of the layer or its key.
    leases = [served.lease(served.submit(GATED), f"runner-{n}") for n in (1, 2)]
    logs: list[list[str]] = [[], []]
    built: dict[int, RootFS] = {}
    errors: list[BaseException] = []

    def build(n: int) -> None:
        state = served.root / f"runner-{n}"
        try:
            job = Job.model_validate(leases[n].spec)
            built[n] = ImageProvider(served.client, state)(job, leases[n], logs[n].append, BuildCancel())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=build, args=(n,)) for n in (0, 1)]
    threads[0].start()
    _wait_for(lambda: any("step 1 (run: i=0): building" in line for line in logs[0]), "the first build")
    threads[1].start()
    try:
        _wait_for(lambda: any("waiting for" in line for line in logs[1]) or bool(errors), "the second")
    finally:
        for gate in (served.root / "runner-0/images/mounts").glob("*/data"):
            (gate / "open").touch()
        for thread in threads:
            thread.join(timeout=120)
    assert not errors, errors
    (waited,) = [line for line in logs[1] if "waiting for" in line]
    assert f"step 1 (run: i=0): waiting for job 'build' of run {leases[0].run_id}" in waited
    assert built[0].digest == built[1].digest
    assert (built[1].layers[0] / "built.txt").read_text() == "built\n"
    reports = [served.client.get_run(lease.run_id).jobs[0].attempts[0].report["image"] for lease in leases]
    assert [(r["layers_built"], r["layers_reused"]) for r in reports] == [(2, 0), (0, 2)]
    # One build per key: the base and the step, each committed once, nothing abandoned.
    assert sorted(e.status for e in served.layers()) == ["committed", "committed"]


SPINNING = """
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


def test_cancelling_a_run_stops_its_image_build_and_leaves_nothing_behind(served: Served) -> None:
    image = f"spin{secrets.token_hex(4)}"  # names this test's build sandboxes among the machine's
    run = served.submit(SPINNING.format(image=image))
    state = served.root / "runner"
    lines: list[str] = []
    executor = JobExecutor(
        served.client,
        state,
        echo=lambda _job, text: lines.append(text),
        images=ImageProvider(served.client, state),
    )
    lease = served.lease(run, "test-runner")
    results: list[JobResult] = []
    worker = threading.Thread(target=lambda: results.append(executor.execute(lease)))
    worker.start()
    _wait_for(lambda: any("compiling-forever" in line for line in lines), "the build step to start")

    served.client.cancel_run(run.run_id)
    asked = time.monotonic()
    worker.join(timeout=120)
    stopped_after = time.monotonic() - asked
    assert not worker.is_alive()
    assert results[0].status == "cancelled", results
    # Generous on a shared machine: the heartbeat (every 3 s) carries the cancel, then one kill.
    assert stopped_after < 30, stopped_after
    final = served.client.get_run(run.run_id)
    assert final.status == "cancelled" and final.jobs[0].attempts[0].status == "cancelled"
    assert "the run was cancelled while the job's image was being built" in "".join(lines)

    # No mount, process, cgroup or scratch dir of the build is left.
    assert _mounts_mentioning(str(served.root)) == []
    assert [d for d in _kiln_cgroup_dirs() if f"image-{image}" in d] == []
    assert _processes_of(str(served.root), []) == set()
    sandboxes = state / "sandbox" / "sandboxes"
    assert not sandboxes.exists() or list(sandboxes.iterdir()) == []
    # The base and the first step are committed; the cancelled step's claim was abandoned.
    layers = served.layers()
    assert sorted(e.status for e in layers) == ["committed", "committed", "failed"]
    (failed,) = [e for e in layers if e.status == "failed"]
    assert "cancelled" in (failed.failure or "")
