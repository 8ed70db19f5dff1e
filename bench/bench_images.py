"""How long until an unchanged custom image is ready for a job, and what a job on it costs to start.

Workload: a 5-layer image (busybox base, two ``run`` steps, a ``copy`` of a small tools folder, an
``env`` step, one more ``run``), built once before measuring. Each number is the median (and p90)
of N repetitions, all in one run on one machine:

- ``image ready (runner cache)``: the runner's whole job for an unchanged image: read the image
  plan, key every layer (hashing the copied files), find each in the runner's cache; target:
  well under 100 ms;
- ``image ready (fresh runner)``: the same with an empty runner cache: every layer is downloaded
  from the blob store and unpacked (a new machine's first job on the image);
- ``bare subprocess``: ``subprocess.run(["true"])``, the floor;
- ``sandbox on busybox`` / ``sandbox on custom image``: open a job sandbox on the image, run
  ``true`` in it, close it (the custom one includes making the image ready);
- ``job on busybox`` / ``job on custom image``: submit → lease → image → sandbox → ``success``
  through an in-process control plane over HTTP, already running (a fleet's steady state).

Reproduce (as root, after ``bash scripts/setup.sh``)::

    .venv/bin/python bench/bench_images.py           # N=20; writes bench/results/images.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for bench.bench_job_overhead's timer

from bench.bench_job_overhead import _median_ms

from kiln.api.app import create_app
from kiln.api.models import RunContextIn, SubmitIn
from kiln.api.plane import ControlPlane, open_control_plane
from kiln.api.server import BackgroundServer
from kiln.config import Paths, database_url, storage_url
from kiln.images.builder import ImageBuilder
from kiln.images.builtin import busybox_image
from kiln.images.layers import LayerCache
from kiln.images.lockfile import Lock
from kiln.images.plan import ImagePlan, image_plan
from kiln.images.service import LayerScope, LayerService, PlaneLayerStore
from kiln.images.steps import BuildSite
from kiln.runner import ControlPlaneClient, Runner
from kiln.sandbox import JobSandbox, Limits, RootFS
from kiln.scheduler.trust import TrustTier
from kiln.source import snapshot_source
from kiln.spec import parse_workflow

RESULTS = Path(__file__).parent / "results" / "images.json"
WORKFLOW = """
name: bench
images:
  tools:
    from: busybox
    steps:
      - run: echo one > /one.txt
      - run: mkdir -p /opt/data && seq 1 2000 > /opt/data/numbers
      - copy: {src: tools/, dst: /opt/tools}
      - env: {PATH: "/opt/tools/bin:$PATH"}
      - run: hello > /hello.txt
jobs:
  trivial:
    image: tools
    steps:
      - run: 'true'
"""
BUSYBOX = "name: bench\njobs:\n  trivial:\n    image: busybox\n    steps:\n      - run: 'true'\n"


def _project(root: Path, workflow: str) -> Path:
    (root / "tools/bin").mkdir(parents=True)
    for index in range(20):
        (root / f"tools/share/file-{index}.txt").parent.mkdir(parents=True, exist_ok=True)
        (root / f"tools/share/file-{index}.txt").write_text("x" * 4096)
    (root / "tools/bin/hello").write_text("#!/bin/sh\necho hello\n")
    os.chmod(root / "tools/bin/hello", 0o755)
    (root / "kiln.yml").write_text(workflow)
    return root


def _store(plane: ControlPlane) -> PlaneLayerStore:
    scope = LayerScope("local", "bench", TrustTier.PROTECTED)
    return PlaneLayerStore(LayerService(plane.db, plane.blobs), plane.blobs, scope)


def _ready(plan_json: dict, project: Path, state: Path, store: PlaneLayerStore) -> RootFS:
    """What the runner's image provider does for a job, without the HTTP report at its end."""
    plan = ImagePlan.from_json(plan_json)
    site = BuildSite(LayerCache(state / "images"), state / "sandbox", project, "bench", lambda _: None)
    return ImageBuilder(site, store, plan.lock).build(plan.images, plan.image).rootfs


def bench_ready(n: int, home: Path) -> dict[str, tuple[float, float]]:
    project = _project(home / "project", WORKFLOW)
    plane = open_control_plane(f"sqlite:///{home / 'ready.db'}", (home / "blobs").as_uri(), spool_dir=home)
    store = _store(plane)
    workflow = parse_workflow(WORKFLOW)
    plan = image_plan(workflow, workflow.jobs["trivial"], Lock())
    assert plan is not None
    plan_json = plan.to_json()
    state = home / "runner"
    rootfs = _ready(plan_json, project, state, store)  # the one cold build
    assert len(rootfs.layers) == 5, rootfs.layers
    rows = {"image ready (runner cache)": _median_ms(lambda: _ready(plan_json, project, state, store), n)}
    fresh = iter(range(10**6))

    def fresh_runner() -> None:
        other = home / f"fresh-{next(fresh)}"
        _ready(plan_json, project, other, store)
        shutil.rmtree(other)

    rows["image ready (fresh runner)"] = _median_ms(fresh_runner, max(n // 4, 3), warmup=1)
    workspace = home / "ws"
    workspace.mkdir()

    def sandbox_on(make_root: Callable[[], RootFS]) -> Callable[[], None]:
        def start() -> None:
            root = make_root()
            with JobSandbox(
                root, workspace, state_dir=state / "sandbox", name="bench", limits=Limits()
            ) as box:
                outcome = box.run(
                    ["true"], env={"PATH": "/bin"}, network=False, timeout_s=30, output=lambda _: None
                )
                assert outcome.ok

        return start

    rows["bare subprocess"] = _median_ms(lambda: subprocess.run(["true"], check=True), n)
    rows["sandbox on busybox"] = _median_ms(sandbox_on(lambda: busybox_image(state / "images")), n)
    rows["sandbox on custom image"] = _median_ms(
        sandbox_on(lambda: _ready(plan_json, project, state, store)), n
    )
    plane.db.dispose()
    return rows


def bench_jobs(n: int, home: Path) -> dict[str, tuple[float, float]]:
    paths = Paths(home / "plane").ensure()
    plane = open_control_plane(database_url(paths), storage_url(paths), spool_dir=paths.home / "spool")
    rows: dict[str, tuple[float, float]] = {}
    with BackgroundServer(create_app(plane)) as server:
        client = ControlPlaneClient(server.url)
        stop = threading.Event()
        runner = Runner(client, paths.runner, poll_s=0.005)
        runner.prepare()
        thread = threading.Thread(target=runner.run, args=(stop,), daemon=True)
        thread.start()
        try:
            for name, workflow in (("job on busybox", BUSYBOX), ("job on custom image", WORKFLOW)):
                source = _project(home / name.replace(" ", "-"), workflow)
                snap = snapshot_source(source, home)
                client.upload_source(snap.info.digest, snap.archive)

                def job(workflow: str = workflow, digest: str = snap.info.digest) -> None:
                    run = client.submit(
                        SubmitIn(
                            context=RunContextIn(repo="bench"), workflow_text=workflow, source_digest=digest
                        )
                    )
                    while (status := client.get_run(run.run_id).status) not in {"success", "failed", "error"}:
                        time.sleep(0.002)
                    assert status == "success", status

                rows[name] = _median_ms(job, n)
        finally:
            stop.set()
            thread.join()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kiln-bench-images-") as tmp:
        home = Path(tmp)
        rows = bench_ready(args.n, home / "ready")
        rows.update(bench_jobs(args.n, home / "jobs"))
    bare = rows["bare subprocess"][0]
    print(f"{'what':<30}{'median ms':>11}{'p90 ms':>9}{'x bare':>9}")
    for name, (median, p90) in rows.items():
        print(f"{name:<30}{median:>11.1f}{p90:>9.1f}{median / bare:>9.0f}")
    ready = rows["image ready (runner cache)"][0]
    print(f"unchanged 5-layer image ready in {ready:.1f} ms (target: well under 100 ms)")
    custom, busybox = rows["job on custom image"][0], rows["job on busybox"][0]
    print(f"a job on the custom image costs {custom - busybox:+.1f} ms against one on busybox")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "n": args.n,
                "results": {
                    name: {
                        "median_ms": round(m, 2),
                        "p90_ms": round(p, 2),
                        "ratio_to_bare": round(m / bare, 1),
                    }
                    for name, (m, p) in rows.items()
                },
            },
            indent=2,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
