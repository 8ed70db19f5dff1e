"""reap_orphans: what a runner killed with SIGKILL mid-step leaves behind is found and removed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from kiln.sandbox import JobSandbox, RootFS, reap_orphans
from kiln.sandbox.cgroups import CGROUP_PREFIX, V1Backend, detect_backend

pytestmark = pytest.mark.sandbox

RUNNER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from kiln.images import busybox_image
    from kiln.sandbox import JobSandbox, Limits

    images, state, workspace = map(Path, sys.argv[1:4])

    def output(data: bytes) -> None:
        sys.stdout.write(data.decode())
        sys.stdout.flush()

    image = busybox_image(images)
    with JobSandbox(image, workspace, state_dir=state, name="orphan", limits=Limits(pids=32)) as sb:
        sb.run(["sh", "-c", "echo ready; exec sleep 600"], env={"PATH": "/bin"}, network=False,
               timeout_s=None, output=output)
    """
)


def job_cgroup_dirs() -> list[Path]:
    backend = detect_backend()
    parents = list(backend.parents.values()) if isinstance(backend, V1Backend) else [backend.parent]
    return [p / n for p in parents for n in os.listdir(p) if n.startswith(f"{CGROUP_PREFIX}orphan-")]


def freeze(dirs: list[Path]) -> None:
    """Freeze the job so that only reap_orphans can end it (bwrap's die-with-parent would, too)."""
    for d in dirs:
        if (d / "freezer.state").exists():
            (d / "freezer.state").write_text("FROZEN")
            return
        if (d / "cgroup.freeze").exists():
            (d / "cgroup.freeze").write_text("1")
            return
    raise AssertionError("no freezer for the job cgroup")


def test_reap_orphans_after_runner_sigkill(images_dir: Path, state_dir: Path, workspace: Path) -> None:
    runner = subprocess.Popen(
        [sys.executable, "-c", RUNNER, str(images_dir), str(state_dir), str(workspace)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert runner.stdout is not None
        assert runner.stdout.readline() == "ready\n"
        dirs = job_cgroup_dirs()
        assert dirs, "the runner's job cgroup exists"
        sleepers = {int(p) for d in dirs for p in (d / "cgroup.procs").read_text().split()}
        assert sleepers
        freeze(dirs)
    finally:
        runner.send_signal(signal.SIGKILL)
        runner.wait()

    # The frozen job outlives its runner: cgroup, processes and scratch dir are all still there.
    assert all(d.exists() for d in dirs)
    assert all(Path(f"/proc/{pid}").exists() for pid in sleepers)
    scratch_dirs = list((state_dir / "sandboxes").iterdir())
    assert len(scratch_dirs) == 1

    removed = reap_orphans(state_dir)

    assert sorted(removed) == sorted([f"cgroup {d}" for d in dirs] + [f"scratch {scratch_dirs[0]}"])
    assert not any(d.exists() for d in dirs)
    assert not any(s.exists() for s in scratch_dirs)
    deadline = time.monotonic() + 5
    while any(Path(f"/proc/{pid}").exists() for pid in sleepers) and time.monotonic() < deadline:
        time.sleep(0.05)  # SIGKILLed and gone from the cgroup; reaped by init a moment later
    assert not any(_is_live(pid) for pid in sleepers)
    assert reap_orphans(state_dir) == []


def _is_live(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_reap_orphans_leaves_live_sandboxes_alone(
    busybox: RootFS, open_sandbox: Callable[..., JobSandbox], state_dir: Path, sh
) -> None:
    with open_sandbox(busybox, "live") as sandbox:
        assert reap_orphans(state_dir) == []
        outcome, text = sh(sandbox, "echo still-here")
        assert outcome.ok and text == "still-here\n"
