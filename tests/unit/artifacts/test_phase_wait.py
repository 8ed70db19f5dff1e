"""The artifact phase waits for an artifact still being uploaded, and gives up after its timeout.

Jobs run one after another today, so a needed artifact is rarely still uploading; the wait is
exercised here against a scripted control plane, with a fake clock.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pytest

from kiln.api.models import LeaseOut, RunContextIn
from kiln.artifacts.collect import collect
from kiln.artifacts.phase import ArtifactsPhase, UploadStats
from kiln.artifacts.spool import ArtifactSpool
from kiln.artifacts.wire import ArtifactOut, NeededArtifactOut
from kiln.errors import ArtifactUnavailable
from kiln.runner.phases import JobContext
from kiln.spec import Job

NOW = datetime(2026, 11, 28, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class ScriptedPlane:
    """Answers the needed-artifacts call from a script; records reports."""

    def __init__(self, answers: list[list[NeededArtifactOut]]) -> None:
        self.answers = answers
        self.calls = 0
        self.reports: list[Any] = []

    def needed_artifacts(self, attempt_id: str, token: str) -> list[NeededArtifactOut]:
        answer = self.answers[min(self.calls, len(self.answers) - 1)]
        self.calls += 1
        return answer

    def report(self, attempt_id: str, token: str, section: str, value: Any) -> None:
        self.reports.append((section, value))


class LocalTransfer:
    """Serves one spooled archive by its digest (what the grants would fetch)."""

    def __init__(self, archives: dict[str, Path]) -> None:
        self.archives = archives

    def upload(self, path: Path, *, digest: str, size: int, progress: Any = None) -> UploadStats:
        raise AssertionError("nothing is uploaded here")

    def download(self, digest: str, dest: Path) -> int:
        shutil.copyfile(self.archives[digest], dest)
        return dest.stat().st_size


def _artifact(tmp_path: Path) -> tuple[ArtifactOut, Path]:
    producer = tmp_path / "producer"
    (producer / "out").mkdir(parents=True)
    (producer / "out/data").write_text("payload")
    found = collect(producer, ["out"])
    spooled = ArtifactSpool(tmp_path / "spool").spool("run", "build", "out", found.members, found.manifest)
    artifact = ArtifactOut(
        artifact_id="a1",
        run_id="run",
        job="build",
        name="out",
        state="committed",
        digest=spooled.digest,
        size_bytes=spooled.size_bytes,
        files=found.files,
        unpacked_bytes=found.unpacked_bytes,
        created_at=NOW,
        committed_at=NOW,
        expires_at=None,
        attempt_number=1,
        failure=None,
        manifest=found.manifest,
    )
    return artifact, spooled.path


def _context(tmp_path: Path, plane: ScriptedPlane, lines: list[str]) -> JobContext:
    lease = LeaseOut(
        run_id="run",
        job_id="j2",
        job_name="test",
        attempt_id="att",
        attempt_number=1,
        lease_token="tok",
        lease_expires_at=NOW,
        lease_ttl_s=30,
        spec={},
        workflow_env={},
        workflow_name="w",
        source_digest="sha256:" + "0" * 64,
        context=RunContextIn(repo="r"),
        trust_tier="protected",
    )
    workspace = tmp_path / "job" / "workspace"
    workspace.mkdir(parents=True)
    job = Job.model_validate({"needs": ["build"], "steps": [{"run": "true"}]})
    return JobContext(
        lease=lease,
        job=job,
        client=cast(Any, plane),
        rootfs=cast(Any, None),
        sandbox=cast(Any, None),
        workspace=workspace,
        spool_dir=tmp_path / "runner-spool",
        log=lines.append,
        secrets={},
    )


def test_an_uploading_artifact_is_waited_for(tmp_path: Path) -> None:
    artifact, archive = _artifact(tmp_path)
    uploading = NeededArtifactOut(
        name="out", job="build", state="uploading", reason="attempt 1 is uploading it"
    )
    committed = NeededArtifactOut(name="out", job="build", state="committed", artifact=artifact)
    plane, clock, lines = ScriptedPlane([[uploading], [uploading], [committed]]), Clock(), []
    ctx = _context(tmp_path, plane, lines)
    phase = ArtifactsPhase(
        transfer=lambda _ctx: LocalTransfer({artifact.digest or "": archive}),
        wait_timeout_s=60,
        poll_s=5,
        clock=clock,
        sleep=clock.sleep,
    )
    phase.before_steps(ctx)
    assert plane.calls == 3 and clock.now == 10
    assert (ctx.workspace / "out/data").read_text() == "payload"
    assert lines[0] == "kiln: artifact out of job build: waiting (attempt 1 is uploading it)"
    assert sum("waiting" in line for line in lines) == 1  # said once, not on every poll
    ((section, value),) = plane.reports
    assert section == "artifacts" and value[0]["state"] == "extracted" and value[0]["from_job"] == "build"


def test_waiting_gives_up_after_the_timeout(tmp_path: Path) -> None:
    uploading = NeededArtifactOut(
        name="out", job="build", state="uploading", reason="attempt 1 is uploading it"
    )
    plane, clock = ScriptedPlane([[uploading]]), Clock()
    phase = ArtifactsPhase(
        transfer=lambda _ctx: LocalTransfer({}), wait_timeout_s=30, poll_s=4, clock=clock, sleep=clock.sleep
    )
    with pytest.raises(ArtifactUnavailable) as caught:
        phase.before_steps(_context(tmp_path, plane, []))
    assert caught.value.message == (
        "artifact `out` of job `build` is still uploading after 30s of waiting; job `test` needs it"
    )
    assert clock.now >= 30 and not list((tmp_path / "job/workspace").iterdir())


def test_a_job_without_needs_asks_nothing(tmp_path: Path) -> None:
    plane = ScriptedPlane([[]])
    ctx = _context(tmp_path, plane, [])
    ctx.job = Job.model_validate({"steps": [{"run": "true"}]})
    ArtifactsPhase(transfer=lambda _ctx: LocalTransfer({})).before_steps(ctx)
    assert plane.calls == 0 and plane.reports == []
