"""Artifacts through real jobs: the runner phase, the HTTP API, blob transfer by grants, the sandbox.

Each test runs small workflows on a warm in-process kiln (``harness.py``); the ones that matter for
storage run on the file blob store and on SeaweedFS.
"""

from __future__ import annotations

import time

import pytest

from .harness import ArtifactKiln

pytestmark = pytest.mark.sandbox

ROUND_TRIP = """
name: round-trip
jobs:
  build:
    image: busybox
    steps:
      - run: |
          mkdir -p dist/bin dist/empty dist/private
          printf '#!/bin/sh\\necho selftest ok\\n' > dist/bin/app
          chmod 755 dist/bin/app
          echo key > dist/private/key && chmod 600 dist/private/key
          echo notes > dist/notes && chmod 640 dist/notes
          chmod 700 dist/private
          ln -s bin/app dist/app
          ln -s ../README dist/readme
          echo scratch > dist/scratch.tmp
    artifacts:
      - name: dist
        paths: ["dist/**"]
        exclude: ["**/*.tmp"]
  test:
    image: busybox
    needs: [build]
    steps:
      - run: |
          ./dist/app
          test ! -e dist/scratch.tmp
          test -d dist/empty && test -z "$(ls -A dist/empty)"
          echo "modes $(stat -c %a dist/bin/app dist/private/key dist/notes dist/private | tr '\\n' ' ')"
          echo "links $(readlink dist/app) $(readlink dist/readme)"
          cat dist/readme
"""


def _job(summary: dict, name: str) -> dict:
    return next(job for job in summary["jobs"] if job["name"] == name)


def test_round_trip_keeps_modes_links_and_empty_folders(kiln: ArtifactKiln, project) -> None:
    run_id = kiln.submit(project({"kiln.yml": ROUND_TRIP, "README": "the readme\n"}))
    summary = kiln.finish(run_id)
    assert [job["status"] for job in summary["jobs"]] == ["success", "success"], kiln.log(run_id)
    (made,) = _job(summary, "build")["artifacts"]
    assert made["state"] == "committed" and made["digest"].startswith("sha256:")
    assert made["files"] == 5 and made["size"] > 0 and made["parts"] == 1 and made["resumed_parts"] == 0
    assert {"name", "state", "digest", "size", "files", "upload_s", "parts", "resumed_parts"} <= made.keys()
    (got,) = _job(summary, "test")["artifacts"]
    assert (got["state"], got["from_job"], got["digest"]) == ("extracted", "build", made["digest"])
    log = kiln.log(run_id)
    assert "selftest ok" in log
    assert "modes 755 600 640 700" in log
    assert "links bin/app ../README" in log and "the readme" in log
    (listed,) = kiln.client.list_artifacts(run_id)
    assert (listed.name, listed.job, listed.digest, listed.state) == (
        "dist",
        "build",
        made["digest"],
        "committed",
    )


CORRUPT = """
name: corrupt
jobs:
  build:
    image: busybox
    steps: [{run: "mkdir -p out && head -c 300000 /dev/urandom > out/data && echo marker > out/marker"}]
    artifacts: [{name: out, paths: [out]}]
  test:
    image: busybox
    needs: build
    steps: [{run: "echo should-not-run"}]
  after:
    image: busybox
    steps: [{run: "echo should-not-run"}]
"""


def test_a_flipped_byte_fails_the_job_that_needs_it_and_nothing_is_extracted(
    kiln: ArtifactKiln, project
) -> None:
    run_id = kiln.submit(project({"kiln.yml": CORRUPT}))
    assert kiln.step(run_id).status == "success"  # type: ignore[union-attr]
    (artifact,) = kiln.client.list_artifacts(run_id)
    assert artifact.digest is not None
    kiln.flip_byte(artifact.digest, offset=1234)
    result = kiln.step(run_id)
    assert result is not None and result.status == "failed"
    assert result.error_message is not None
    assert "artifact `out` of job `build` failed verification" in result.error_message
    assert artifact.digest in result.error_message and "nothing was extracted" in result.error_message
    summary = kiln.finish(run_id)
    assert [job["status"] for job in summary["jobs"]] == ["success", "failed", "skipped"]
    assert "should-not-run" not in kiln.log(run_id)
    # Nothing reached the workspace: the step never ran and the download was left out of it.
    assert [s["status"] for s in _job(summary, "test")["steps"]] == ["skipped"]


NO_FILES = """
name: no-files
jobs:
  build:
    image: busybox
    steps: [{run: "true"}]
    artifacts:
      - {name: dist, paths: ["dist/**"], if-no-files-found: warn}
      - {name: extra, paths: ["extra/**"], if-no-files-found: ignore}
  test:
    image: busybox
    needs: [build]
    steps: [{run: "echo should-not-run"}]
  deploy:
    image: busybox
    steps: [{run: "echo should-not-run"}]
"""


def test_a_failed_artifact_fails_the_job_that_needs_it_and_skips_the_rest(
    kiln: ArtifactKiln, project
) -> None:
    run_id = kiln.submit(project({"kiln.yml": NO_FILES}))
    summary = kiln.finish(run_id)
    assert [job["status"] for job in summary["jobs"]] == ["success", "failed", "skipped"]
    build = _job(summary, "build")
    assert [(a["name"], a["state"]) for a in build["artifacts"]] == [("dist", "failed"), ("extra", "failed")]
    log = kiln.log(run_id)
    assert "warning: artifact dist: no files matched dist/**" in log
    assert "artifact extra" not in log.replace("artifact `extra`", "")  # ignore: not a word
    error = _job(summary, "test")["error"]
    assert error == (
        "artifact `dist` of job `build` is failed (no files matched dist/**); "
        "artifact `extra` of job `build` is failed (no files matched extra/**); job `test` needs it"
    )
    assert "should-not-run" not in log


def test_no_files_is_an_error_by_default(file_kiln: ArtifactKiln, project) -> None:
    workflow = NO_FILES.replace(", if-no-files-found: warn", "")
    summary = file_kiln.finish(file_kiln.submit(project({"kiln.yml": workflow})))
    assert [job["status"] for job in summary["jobs"]] == ["failed", "skipped", "skipped"]
    assert _job(summary, "build")["error"] == "artifact `dist`: no files matched dist/**"


EXPIRING = """
name: expiring
jobs:
  build:
    image: busybox
    steps: [{run: "mkdir -p out && echo data > out/data"}]
    artifacts: [{name: out, paths: [out], retention: 1s}]
  test:
    image: busybox
    needs: [build]
    steps: [{run: "cat out/data"}]
  deploy:
    image: busybox
    steps: [{run: "echo should-not-run"}]
"""


def test_an_expired_artifact_fails_the_job_that_needs_it(kiln: ArtifactKiln, project) -> None:
    run_id = kiln.submit(project({"kiln.yml": EXPIRING}))
    assert kiln.step(run_id).status == "success"  # type: ignore[union-attr]
    time.sleep(1.5)  # the retention runs out; no janitor has run
    summary = kiln.finish(run_id)
    assert [job["status"] for job in summary["jobs"]] == ["success", "failed", "skipped"]
    error = _job(summary, "test")["error"]
    assert error.startswith("artifact `out` of job `build` is expired (its retention ended at ")
    assert error.endswith("; job `test` needs it")
    assert kiln.client.list_artifacts(run_id) == []


WHEN = """
name: when
jobs:
  build:
    image: busybox
    steps: [{run: "mkdir -p out logs && echo o > out/o && echo l > logs/l && exit 3"}]
    artifacts:
      - {name: out, paths: [out]}
      - {name: logs, paths: [logs], when: on-failure}
      - {name: all, paths: [out, logs], when: always}
"""


def test_when_picks_the_artifacts_of_a_failed_job(file_kiln: ArtifactKiln, project) -> None:
    run_id = file_kiln.submit(project({"kiln.yml": WHEN}))
    summary = file_kiln.finish(run_id)
    build = _job(summary, "build")
    assert build["status"] == "failed" and build["error"].startswith("step ")
    assert [(a["name"], a["state"]) for a in build["artifacts"]] == [
        ("out", "skipped"),
        ("logs", "committed"),
        ("all", "committed"),
    ]
    assert sorted(a.name for a in file_kiln.client.list_artifacts(run_id)) == ["all", "logs"]


ESCAPE = """
name: escape
jobs:
  build:
    image: busybox
    steps: [{run: "mkdir -p out && ln -s /etc/passwd out/passwd"}]
    artifacts: [{name: out, paths: [out]}]
"""


def test_a_link_out_of_the_workspace_fails_the_producer(file_kiln: ArtifactKiln, project) -> None:
    summary = file_kiln.finish(file_kiln.submit(project({"kiln.yml": ESCAPE})))
    build = _job(summary, "build")
    assert build["status"] == "failed"
    assert build["error"] == (
        "artifact `out`: symbolic links leave the workspace (out/passwd -> /etc/passwd); "
        "an artifact keeps links within it"
    )
