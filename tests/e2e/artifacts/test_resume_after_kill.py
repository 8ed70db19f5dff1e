"""A runner SIGKILLed in the middle of uploading a large artifact; its next attempt resumes the upload.

Real processes: ``kiln server`` and ``kiln runner``. The build writes 300 MiB of pseudo-random
(incompressible, and the same on every attempt) data; the test waits until part of its multipart
upload is stored, SIGKILLs the runner, and starts a runner on the same machine (the same state
folder, hence the same spool). The job's second attempt must resume from the spool: the parts the
first one stored are kept, only the missing ones are sent, and the job that needs the artifact gets
exactly the bytes the build wrote.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from tests.e2e.scaleout.fleet import free_port, wait_for
from tests.fixtures.seaweedfs import SeaweedFS

from kiln.api.models import RunContextIn, SubmitIn
from kiln.cli.summary import run_summary
from kiln.runner import ControlPlaneClient
from kiln.source import snapshot_source
from kiln.storage import open_blob_store

from .uploads import parts_stored, ready

pytestmark = [pytest.mark.sandbox, pytest.mark.slow]

MIB = 1024 * 1024
SIZE_MIB = 300
SEED = 7
WORKFLOW = f"""
name: resume
jobs:
  build:
    steps:
      - run: |
          mkdir -p big
          python3 - <<'PY'
          import random
          rng = random.Random({SEED})
          with open("big/data", "wb") as out:
              for _ in range({SIZE_MIB}):
                  out.write(rng.randbytes({MIB}))
          PY
    artifacts: [{{name: big, paths: [big]}}]
  test:
    needs: [build]
    steps:
      - run: sha256sum big/data
"""


def _expected_sha256() -> str:
    rng, sha = random.Random(SEED), hashlib.sha256()
    for _ in range(SIZE_MIB):
        sha.update(rng.randbytes(MIB))
    return sha.hexdigest()


@pytest.mark.parametrize("backend", ["file", pytest.param("s3", marks=pytest.mark.s3)])
def test_a_killed_upload_resumes_on_the_same_machine(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    home = tmp_path / "home"
    env = {**os.environ, "KILN_HOME": str(home)}
    if backend == "s3":
        weed: SeaweedFS = request.getfixturevalue("seaweedfs")
        env |= weed.env()
        env["KILN_STORAGE_URL"] = weed.url(f"resume-{uuid.uuid4().hex[:12]}")
        store = open_blob_store(env["KILN_STORAGE_URL"], **weed.options())
    else:
        (home / "storage").mkdir(parents=True)
        store = open_blob_store((home / "storage").as_uri())
    url = f"http://127.0.0.1:{free_port()}"
    kiln = [sys.executable, "-m", "kiln"]
    server = subprocess.Popen(
        [*kiln, "server", "--listen", url.removeprefix("http://"), "--token", "t0k", "--lease-ttl", "3"],
        env=env,
    )
    runners: list[subprocess.Popen[bytes]] = []

    def start_runner() -> subprocess.Popen[bytes]:
        # The same name and state folder each time: the same machine, back after a crash.
        argv = [*kiln, "runner", "--server", url, "--token", "t0k", "--name", "machine-a"]
        runner = subprocess.Popen([*argv, "--state-dir", str(tmp_path / "machine-a")], env=env)
        runners.append(runner)
        return runner

    try:
        wait_for(lambda: ready(url), 30, "the server")
        client = ControlPlaneClient(url, "t0k")
        source = tmp_path / "src"
        source.mkdir()
        (source / "kiln.yml").write_text(WORKFLOW)
        snap = snapshot_source(source, tmp_path / "snap")
        client.upload_source(snap.info.digest, snap.archive)
        run = client.submit(
            SubmitIn(
                context=RunContextIn(repo="resume"), workflow_text=WORKFLOW, source_digest=snap.info.digest
            )
        )
        first = start_runner()

        def part_stored() -> int:
            assert first.poll() is None, "the runner exited before its upload was under way"
            return (n := parts_stored(store)) >= 8 and n

        stored = wait_for(part_stored, 240, "part of the upload", every=0.02)
        first.send_signal(signal.SIGKILL)
        first.wait()

        start_runner()
        final = wait_for(
            lambda: (r := client.get_run(run.run_id)).status in {"success", "failed", "error"} and r,
            600,
            "the run",
            every=0.5,
        )
        summary = run_summary(final)
        log = "".join(line.data for line in client.logs(run.run_id).lines)
        assert final.status == "success", log
        build, test = summary["jobs"]
        assert [a["status"] for a in build["attempt_history"]] == ["lost", "success"]
        (made,) = build["artifacts"]
        assert made["state"] == "committed" and made["reused_spool"] is True
        assert stored < made["parts"], "the upload finished before the runner could be killed"
        # Every part the first attempt stored was kept; only the missing ones were sent.
        assert made["resumed_parts"] >= stored
        assert made["parts_sent"] == made["parts"] - made["resumed_parts"]
        assert made["parts_sent"] < made["parts"]
        (got,) = test["artifacts"]
        assert (got["state"], got["digest"]) == ("extracted", made["digest"])
        assert f"{_expected_sha256()}  big/data" in log
    finally:
        for proc in [*runners, server]:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
        store.close()
