"""What kiln adds to a job of one trivial step, against running ``true`` as a bare subprocess.

Four measurements of the same command in one run, each the median of N repetitions:

- ``bare``: ``subprocess.run(["true"])`` from Python, the floor;
- ``sandbox step``: one step in an open :class:`JobSandbox` (busybox image): mount namespace,
  overlay, bubblewrap, cgroup join;
- ``job, warm control plane``: submit → lease → workspace → sandbox → reports → ``success``,
  through the HTTP API of an in-process control plane that is already running (a fleet's steady state);
- ``kiln run``: the whole command, from process start to exit (Python start-up, migrations, server).

Reproduce (as root, after ``bash scripts/setup.sh``)::

    .venv/bin/python bench/bench_job_overhead.py            # N=20; writes bench/results/job_overhead.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from kiln.api.app import create_app
from kiln.api.models import RunContextIn, SubmitIn
from kiln.api.plane import open_control_plane
from kiln.api.server import BackgroundServer
from kiln.config import Paths, database_url, storage_url
from kiln.images.builtin import busybox_image
from kiln.runner import ControlPlaneClient, Runner
from kiln.sandbox import JobSandbox, Limits
from kiln.source import snapshot_source

WORKFLOW = "name: bench\njobs:\n  trivial:\n    image: busybox\n    steps:\n      - run: 'true'\n"
RESULTS = Path(__file__).parent / "results" / "job_overhead.json"


def _median_ms(fn: Callable[[], object], n: int, warmup: int = 2) -> tuple[float, float]:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.9) - 1]


def bench_bare(n: int) -> tuple[float, float]:
    return _median_ms(lambda: subprocess.run(["true"], check=True), n)


def bench_sandbox_step(n: int, home: Path) -> tuple[float, float]:
    rootfs = busybox_image(home / "images")
    workspace = home / "ws"
    workspace.mkdir()
    with JobSandbox(rootfs, workspace, state_dir=home / "sandbox", name="bench", limits=Limits()) as box:

        def step() -> None:
            outcome = box.run(
                ["true"], env={"PATH": "/bin"}, network=False, timeout_s=30, output=lambda _: None
            )
            assert outcome.ok

        return _median_ms(step, n)


def bench_job(n: int, home: Path) -> tuple[float, float]:
    paths = Paths(home / "plane").ensure()
    plane = open_control_plane(database_url(paths), storage_url(paths), spool_dir=paths.home / "spool")
    with BackgroundServer(create_app(plane)) as server:
        client = ControlPlaneClient(server.url)
        source = home / "src"
        source.mkdir()
        (source / "kiln.yml").write_text(WORKFLOW)
        snap = snapshot_source(source, home / "spool")
        client.upload_source(snap.info.digest, snap.archive)
        stop = threading.Event()
        runner = Runner(client, paths.runner, poll_s=0.005)
        runner.prepare()
        thread = threading.Thread(target=runner.run, args=(stop,), daemon=True)
        thread.start()

        def job() -> None:
            run = client.submit(
                SubmitIn(
                    context=RunContextIn(repo="bench"), workflow_text=WORKFLOW, source_digest=snap.info.digest
                )
            )
            while (status := client.get_run(run.run_id).status) not in {"success", "failed", "error"}:
                time.sleep(0.002)
            assert status == "success", status

        try:
            return _median_ms(job, n)
        finally:
            stop.set()
            thread.join()


def bench_kiln_run(n: int, home: Path) -> tuple[float, float]:
    source = home / "cli"
    source.mkdir()
    (source / "kiln.yml").write_text(WORKFLOW)
    env = {**os.environ, "KILN_HOME": str(home / "cli-home")}

    def run() -> None:
        subprocess.run(
            [sys.executable, "-m", "kiln", "run", "--json", str(source / "kiln.yml")],
            env=env,
            check=True,
            capture_output=True,
        )

    return _median_ms(run, n, warmup=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kiln-bench-") as tmp:
        home = Path(tmp)
        rows = {
            "bare subprocess": bench_bare(args.n),
            "sandbox step": bench_sandbox_step(args.n, home),
            "job, warm control plane": bench_job(args.n, home),
            "kiln run (whole command)": bench_kiln_run(max(args.n // 4, 3), home),
        }
    bare = rows["bare subprocess"][0]
    print(f"{'what':<28}{'median ms':>11}{'p90 ms':>9}{'x bare':>9}")
    for name, (median, p90) in rows.items():
        print(f"{name:<28}{median:>11.1f}{p90:>9.1f}{median / bare:>9.0f}")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                name: {"median_ms": round(m, 2), "p90_ms": round(p, 2), "ratio_to_bare": round(m / bare, 1)}
                for name, (m, p) in rows.items()
            },
            indent=2,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
