"""``kiln artifacts ls/download`` and ``kiln gc`` as a user runs them: after ``kiln run``, on the local
KILN_HOME and through a ``kiln server`` with tokens of two tenants."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.e2e.scaleout.fleet import free_port, wait_for

from .uploads import ready

pytestmark = pytest.mark.sandbox

WORKFLOW = """
name: cli
jobs:
  build:
    image: busybox
    steps:
      - run: |
          mkdir -p dist/bin dist/empty
          printf '#!/bin/sh\\necho hi\\n' > dist/bin/tool && chmod 755 dist/bin/tool
          echo key > dist/key && chmod 600 dist/key
          ln -s bin/tool dist/tool
    artifacts:
      - {name: dist, paths: [dist], retention: RETENTION}
"""
# Everything is old enough for `kiln gc` at once (the grace periods must cover the upload lease).
QUICK_GC = {
    "KILN_UPLOAD_LEASE_S": "1",
    "KILN_BLOB_GRACE_S": "1",
    "KILN_ABANDONED_UPLOAD_S": "1",
    "KILN_UPLOAD_SESSION_RETENTION_S": "1",
}


def _run(kiln, project, retention: str = "1h") -> dict:
    result = kiln("run", "--json", str(project(WORKFLOW.replace("RETENTION", retention))))
    assert result.code == 0, result.stderr
    return result.summary


def test_ls_download_and_a_damaged_blob(kiln, project, kiln_home: Path, tmp_path: Path) -> None:
    summary = _run(kiln, project)
    run_id = summary["run_id"]
    (made,) = summary["jobs"][0]["artifacts"]

    listed = kiln("artifacts", "ls", run_id, "--json")
    assert listed.code == 0, listed.stderr
    (row,) = json.loads(listed.stdout)
    assert (row["name"], row["job"], row["state"], row["digest"], row["files"]) == (
        "dist",
        "build",
        "committed",
        made["digest"],
        3,
    )
    table = kiln("artifacts", "ls", run_id)
    assert table.stdout.splitlines()[0].split() == [
        "JOB",
        "NAME",
        "STATE",
        "SIZE",
        "FILES",
        "DIGEST",
        "EXPIRES",
    ]
    assert table.stdout.splitlines()[1].split()[:3] == ["build", "dist", "committed"]

    out = tmp_path / "out"
    got = kiln("artifacts", "download", run_id, "dist", str(out))
    assert got.code == 0, got.stderr
    assert made["digest"] in got.stdout and "verified" in got.stdout
    assert stat.S_IMODE((out / "dist/bin/tool").stat().st_mode) == 0o755
    assert stat.S_IMODE((out / "dist/key").stat().st_mode) == 0o600
    assert os.readlink(out / "dist/tool") == "bin/tool" and (out / "dist/empty").is_dir()
    assert sorted(p.name for p in out.iterdir()) == ["dist"]  # no leftovers of the download

    archive = kiln("artifacts", "download", run_id, "dist", str(tmp_path / "raw"), "--archive")
    assert archive.code == 0, archive.stderr
    data = (tmp_path / "raw/dist.tar.zst").read_bytes()
    assert "sha256:" + hashlib.sha256(data).hexdigest() == made["digest"]

    missing = kiln("artifacts", "download", run_id, "nope")
    assert missing.code == 2 and "has no artifact named 'nope' (it has: build/dist)" in missing.stderr

    blob = kiln_home / "storage/blobs/sha256" / made["digest"].removeprefix("sha256:")
    damaged = bytearray(blob.read_bytes())
    damaged[len(damaged) // 2] ^= 0x01
    os.chmod(blob, 0o644)
    blob.write_bytes(bytes(damaged))
    bad = tmp_path / "bad"
    refused = kiln("artifacts", "download", run_id, "dist", str(bad))
    assert refused.code == 3, refused.stderr
    assert "artifact 'dist' of job 'build' downloaded as sha256:" in refused.stderr
    assert f"not {made['digest']}" in refused.stderr and "nothing was written" in refused.stderr
    assert list(bad.iterdir()) == []


def test_gc_expires_the_artifact_and_frees_its_blob(kiln, project, kiln_home: Path) -> None:
    summary = _run(kiln, project, retention="2s")
    run_id = summary["run_id"]
    digest = summary["jobs"][0]["artifacts"][0]["digest"]
    blob = kiln_home / "storage/blobs/sha256" / digest.removeprefix("sha256:")
    time.sleep(2.5)  # the artifact's retention (2s) and every grace period (1s) run out

    dry = kiln("gc", "--dry-run", "--json", env=QUICK_GC)
    assert dry.code == 0, dry.stderr
    assert json.loads(dry.stdout)["expired"]["artifacts"] == 1 and blob.exists()

    done = kiln("gc", env=QUICK_GC)
    assert done.code == 0, done.stderr
    assert done.stdout.startswith("retention: 1 artifacts and 0 cache entries were expired")
    assert f"artifact dist (run {run_id} job build)" in done.stdout
    assert not blob.exists()
    listed = json.loads(kiln("artifacts", "ls", run_id, "--all", "--json").stdout)
    assert [(a["name"], a["state"]) for a in listed] == [("dist", "expired")]
    assert kiln("artifacts", "ls", run_id).stdout.strip() == f"run {run_id} has no committed artifacts"


def test_remote_users_see_their_own_tenants_artifacts_only(kiln, project, kiln_home: Path) -> None:
    run_id = _run(kiln, project)["run_id"]  # tenant "local"
    url = f"http://127.0.0.1:{free_port()}"
    env = {**os.environ, "KILN_HOME": str(kiln_home)}
    argv = [
        sys.executable,
        "-m",
        "kiln",
        "server",
        "--listen",
        url.removeprefix("http://"),
        "--token",
        "adm1n",
    ]
    server = subprocess.Popen(argv, env=env, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: ready(url), 30, "the server")
        remote = ("--server", url)
        mine = kiln("artifacts", "ls", run_id, "--json", *remote, "--token", "adm1n")
        assert mine.code == 0, mine.stderr
        assert [a["name"] for a in json.loads(mine.stdout)] == ["dist"]
        assert kiln("tenants", "create", "other", *remote, "--token", "adm1n").code == 0
        made = kiln(
            "tokens", "create", "--tenant", "other", "--name", "o", "--json", *remote, "--token", "adm1n"
        )
        assert made.code == 0, made.stderr
        other = json.loads(made.stdout)["token"]
        theirs = kiln("artifacts", "ls", run_id, *remote, "--token", other)
        assert theirs.code == 2 and f"no run {run_id}" in theirs.stderr
        fetched = kiln("artifacts", "download", run_id, "dist", *remote, "--token", other)
        assert fetched.code == 2 and f"no run {run_id}" in fetched.stderr
    finally:
        server.terminate()
        server.wait(15)
