"""How fast is a 1 GiB artifact through kiln, and what does resuming a killed upload save?

Questions:

1. **Through kiln vs ``aws s3 cp``.** A job writes 1 GiB of random bytes and declares it an
   artifact; the next job ``needs:`` it. kiln selects and hashes the files, packs them (tar + zstd,
   spooled to disk), uploads through the control plane's grants (8 MiB parts, 4 in flight, per-part
   MD5, sha256 of the whole), commits; the next job downloads (sha256 verified while streaming),
   checks the tree against the manifest and extracts it. Against the same SeaweedFS, in the same
   run: ``aws s3 cp`` (awscli from the venv, its defaults: 8 MB parts, 10 threads, no sha256) of the
   raw 1 GiB file up and down. kiln's numbers come from the jobs' own summaries (``upload_s``,
   ``pack_s``, ``download_s``, ``extract_s``), so the jobs' start-up and the data generation are not
   counted; ``aws s3 cp`` times include awscli's start-up (about 0.4 s).
2. **Resume vs restart.** ``kiln server`` and ``kiln runner`` processes; the runner is SIGKILLed once
   half of the artifact's parts are stored. The job's next attempt runs on the same machine (the same
   state folder: it finds the spooled archive and the upload journal, and sends only the missing
   parts), or, for the reference, on another machine (a fresh state folder: it packs again and
   sends every part). Compared: the second attempt's ``upload_s``. Each scenario uses its own
   seed, so the second never finds the first one's blob stored.

Workload: 1 GiB (``--mib``) of random bytes; in question 2 pseudo-random from a seeded generator, so
that the retried step writes the same bytes (seeds 1 and 2). SeaweedFS on free loopback ports,
SQLite metadata, the host image. One run of each; the machine's other load shows in the numbers.

Reproduce (from the repository root, as root: the jobs run in the sandbox)::

    .venv/bin/python bench/bench_artifacts.py             # 1 GiB
    .venv/bin/python bench/bench_artifacts.py --mib 256   # quicker

Prints a table and writes ``bench/results/artifacts.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # for tests.fixtures.seaweedfs, which knows how to start the server

from bench.bench_storage import run_aws, timed  # noqa: E402
from tests.e2e.artifacts.uploads import parts_stored, ready  # noqa: E402
from tests.e2e.scaleout.fleet import free_port, wait_for  # noqa: E402
from tests.fixtures.seaweedfs import SeaweedFS, start_seaweedfs, stop_seaweedfs  # noqa: E402

from kiln.api.models import RunContextIn, SubmitIn  # noqa: E402
from kiln.cli.summary import run_summary  # noqa: E402
from kiln.runner import ControlPlaneClient  # noqa: E402
from kiln.source import snapshot_source  # noqa: E402
from kiln.storage import open_blob_store  # noqa: E402

RESULTS = REPO / "bench" / "results" / "artifacts.json"
MIB = 1024 * 1024
PART_BYTES = 8 * MIB
KILN = [sys.executable, "-m", "kiln"]

RANDOM_WORKFLOW = """
name: bench-artifact
jobs:
  build:
    steps:
      - run: mkdir -p big && head -c {size} /dev/urandom > big/data
    artifacts: [{{name: big, paths: [big]}}]
  test:
    needs: [build]
    steps:
      - run: test "$(stat -c %s big/data)" = {size}
"""
SEEDED_WORKFLOW = """
name: bench-resume
jobs:
  build:
    steps:
      - run: |
          mkdir -p big
          python3 - <<'PY'
          import random
          rng = random.Random({seed})
          with open("big/data", "wb") as out:
              for _ in range({mib}):
                  out.write(rng.randbytes({chunk}))
          PY
    artifacts: [{{name: big, paths: [big]}}]
"""


def _job(summary: dict[str, Any], name: str) -> dict[str, Any]:
    return next(job for job in summary["jobs"] if job["name"] == name)


def through_kiln(server: SeaweedFS, work: Path, mib: int) -> dict[str, Any]:
    """``kiln run`` of a producer and a consumer of a ``mib`` MiB artifact on SeaweedFS."""
    project = work / "project"
    project.mkdir()
    (project / "kiln.yml").write_text(RANDOM_WORKFLOW.format(size=mib * MIB))
    env = {
        **server.env(),
        "KILN_HOME": str(work / "kiln-home"),
        "KILN_STORAGE_URL": server.url(f"bench-{uuid.uuid4().hex[:8]}"),
    }
    done = subprocess.run(
        [*KILN, "run", "--json", str(project / "kiln.yml")], env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"kiln run failed ({done.returncode}):\n{done.stderr[-3000:]}")
    summary = json.loads(done.stdout)
    (made,) = _job(summary, "build")["artifacts"]
    (got,) = _job(summary, "test")["artifacts"]
    shutil.rmtree(work / "kiln-home", ignore_errors=True)
    return {
        "upload_s": made["upload_s"],
        "pack_s": made["pack_s"],
        "transfer_s": round(made["upload_s"] - made["pack_s"], 3),
        "download_s": got["download_s"],
        "extract_s": got["extract_s"],
        "archive_bytes": made["size"],
        "parts": made["parts"],
    }


def with_aws(server: SeaweedFS, work: Path, mib: int) -> tuple[float, float]:
    """``aws s3 cp`` of a ``mib`` MiB random file up to SeaweedFS and back."""
    source = work / "aws-up.bin"
    with source.open("wb") as out:
        for _ in range(mib):
            out.write(os.urandom(MIB))
    key = f"s3://{server.bucket}/aws-{uuid.uuid4().hex[:8]}/blob.bin"
    endpoint = ["--endpoint-url", server.endpoint]
    up = timed(lambda: run_aws(["s3", "cp", str(source), key, *endpoint], server.env()))
    down = timed(lambda: run_aws(["s3", "cp", key, str(work / "aws-down.bin"), *endpoint], server.env()))
    for path in (source, work / "aws-down.bin"):
        path.unlink()
    return up, down


def killed_at_half(
    server: SeaweedFS, work: Path, mib: int, seed: int, *, same_machine: bool
) -> dict[str, Any]:
    """Kill the uploading runner at 50 %, let the job's next attempt finish; its upload's numbers."""
    home = work / f"server-{seed}"
    url = f"http://127.0.0.1:{free_port()}"
    storage_url = server.url(f"resume-{uuid.uuid4().hex[:8]}")
    env = {**server.env(), "KILN_HOME": str(home), "KILN_STORAGE_URL": storage_url}
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    argv = [*KILN, "server", "--listen", url.removeprefix("http://"), "--token", "t0k", "--lease-ttl", "3"]
    processes = [subprocess.Popen(argv, env=env, **quiet)]  # type: ignore[call-overload]
    store = open_blob_store(storage_url, **server.options())

    def runner(state: str) -> subprocess.Popen[bytes]:
        args = [
            "runner",
            "--server",
            url,
            "--token",
            "t0k",
            "--name",
            state,
            "--state-dir",
            str(work / state),
        ]
        proc: subprocess.Popen[bytes] = subprocess.Popen([*KILN, *args], env=env, **quiet)  # type: ignore[call-overload]
        processes.append(proc)
        return proc

    try:
        wait_for(lambda: ready(url), 30, "the server")
        client = ControlPlaneClient(url, "t0k")
        workflow = SEEDED_WORKFLOW.format(seed=seed, mib=mib, chunk=MIB)
        source = work / f"src-{seed}"
        source.mkdir()
        (source / "kiln.yml").write_text(workflow)
        snap = snapshot_source(source, work / "snapshots")
        client.upload_source(snap.info.digest, snap.archive)
        body = SubmitIn(
            context=RunContextIn(repo="bench"), workflow_text=workflow, source_digest=snap.info.digest
        )
        run = client.submit(body)
        first = runner(f"machine-{seed}")
        half = -(-mib * MIB // PART_BYTES) // 2
        stored = wait_for(
            lambda: (n := parts_stored(store)) >= half and n, 900, "half of the upload", every=0.02
        )
        first.send_signal(signal.SIGKILL)
        first.wait()
        killed_at = time.monotonic()
        runner(f"machine-{seed}" if same_machine else f"other-machine-{seed}")
        final = wait_for(
            lambda: (r := client.get_run(run.run_id)).status in {"success", "failed", "error"} and r,
            1800,
            "the run",
            every=0.5,
        )
        finished_s = time.monotonic() - killed_at
        if final.status != "success":
            raise SystemExit(f"the resume run ended {final.status}")
        (made,) = run_summary(final)["jobs"][0]["artifacts"]
        client.close()
        return {
            "parts": made["parts"],
            "parts_stored_at_kill": stored,
            "resumed_parts": made["resumed_parts"],
            "parts_sent": made["parts_sent"],
            "reused_spool": made["reused_spool"],
            "pack_s": made["pack_s"],
            "upload_s": made["upload_s"],
            "kill_to_success_s": round(finished_s, 3),
        }
    finally:
        for proc in reversed(processes):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=1024, help="artifact size in MiB (default 1024)")
    options = parser.parse_args()
    mib = options.mib
    work = Path(tempfile.mkdtemp(prefix="kiln-bench-artifacts-"))
    server = start_seaweedfs(work / "seaweedfs", volume_size_limit_mb=256)
    try:
        kiln = through_kiln(server, work, mib)
        aws_up, aws_down = with_aws(server, work, mib)
        resumed = killed_at_half(server, work, mib, seed=1, same_machine=True)
        restarted = killed_at_half(server, work, mib, seed=2, same_machine=False)
    finally:
        stop_seaweedfs(server)
        shutil.rmtree(work, ignore_errors=True)

    size = mib * MIB
    kiln_down = kiln["download_s"] + kiln["extract_s"]
    print(f"\n{mib} MiB artifact, {os.cpu_count()} CPUs, SeaweedFS on loopback\n")
    print(f"{'':<44} {'seconds':>8} {'MB/s':>8} {'kiln/aws':>9}")
    rows = [
        ("kiln upload (select, hash, pack, send, commit)", kiln["upload_s"], aws_up),
        ("  of which select, hash and pack", kiln["pack_s"], None),
        ("  of which send and commit", kiln["transfer_s"], aws_up),
        ("aws s3 cp up", aws_up, None),
        ("kiln download (verified) + extract (checked)", kiln_down, aws_down),
        ("  of which download", kiln["download_s"], aws_down),
        ("aws s3 cp down", aws_down, None),
    ]
    for what, seconds, reference in rows:
        ratio = f"{seconds / reference:.2f}" if reference else ""
        print(f"{what:<44} {seconds:8.2f} {size / seconds / 1e6:8.1f} {ratio:>9}")
    saved = restarted["upload_s"] - resumed["upload_s"]
    print(f"\nkilled at 50 %, the next attempt's upload   {'seconds':>8} {'parts sent':>11} {'kept':>6}")
    for label, case in (
        ("resumed (same machine, spool kept)", resumed),
        ("from zero (another machine)", restarted),
    ):
        print(f"{label:<44} {case['upload_s']:8.2f} {case['parts_sent']:>11} {case['resumed_parts']:>6}")
    print(f"resuming saved {saved:.2f} s ({saved / restarted['upload_s']:.0%} of the restart's upload)")

    sha = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "bench": "artifacts",
                "git_sha": sha,
                "machine": {
                    "platform": platform.platform(),
                    "cpus": os.cpu_count(),
                    "python": platform.python_version(),
                },
                "parameters": {
                    "size_bytes": size,
                    "part_size_bytes": PART_BYTES,
                    "store": "seaweedfs",
                    "metadata": "sqlite",
                },
                "results": {
                    "through_kiln": kiln,
                    "aws_s3_cp": {"upload_s": round(aws_up, 3), "download_s": round(aws_down, 3)},
                    "ratios": {
                        "upload_kiln_to_aws": round(kiln["upload_s"] / aws_up, 3),
                        "upload_transfer_only_kiln_to_aws": round(kiln["transfer_s"] / aws_up, 3),
                        "download_and_extract_kiln_to_aws": round(kiln_down / aws_down, 3),
                        "download_only_kiln_to_aws": round(kiln["download_s"] / aws_down, 3),
                    },
                    "resume_after_kill_at_half": {
                        "resumed": resumed,
                        "from_zero": restarted,
                        "seconds_saved": round(saved, 3),
                        "fraction_saved": round(saved / restarted["upload_s"], 3),
                    },
                },
            },
            indent=2,
        )
        + "\n"
    )
    print(f"\nwrote {RESULTS.relative_to(REPO)}")


if __name__ == "__main__":
    main()
