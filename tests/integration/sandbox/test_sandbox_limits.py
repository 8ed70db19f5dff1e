"""Limits, timeouts and cancellation: each stops the whole step promptly and says why."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from kiln.errors import SandboxUnavailable
from kiln.sandbox import JobSandbox, Limits, RootFS
from kiln.sandbox.cgroups import CGROUP_PREFIX, V1Backend, detect_backend

pytestmark = pytest.mark.sandbox

OpenSandbox = Callable[..., JobSandbox]


def pids_dir(sandbox: JobSandbox) -> Path:
    backend = detect_backend()
    parent = backend.parents["pids"] if isinstance(backend, V1Backend) else backend.parent
    return parent / f"{CGROUP_PREFIX}{sandbox.job_id}"


def pids_current(sandbox: JobSandbox) -> int:
    return int((pids_dir(sandbox) / "pids.current").read_text())


def processes_left(sandbox: JobSandbox) -> str:
    # Not pids.current: the kernel releases a dead pid namespace's init a moment later (measured:
    # up to ~2 s), so the counter lags behind the (empty) list of processes.
    return (pids_dir(sandbox) / "cgroup.procs").read_text()


def test_memory_limit_kills_and_is_named(busybox: RootFS, open_sandbox: OpenSandbox, sh) -> None:
    with open_sandbox(busybox, limits=Limits(memory_bytes=64 << 20, pids=64)) as sandbox:
        # awk doubles a string until the cgroup's OOM killer stops it (~64 MiB in a few steps).
        outcome, text = sh(sandbox, "awk 'BEGIN { s = \"0123456789abcdef\"; while (1) s = s s }'")
        assert outcome.killed_by == "memory limit 64 MiB", (outcome, text)
        assert outcome.signal == 9 and outcome.exit_code is None and not outcome.ok
        # the job is still usable after an OOM kill
        outcome, text = sh(sandbox, "echo alive")
        assert outcome.ok and text == "alive\n"


def test_fork_bomb_is_contained_by_the_pids_limit(busybox: RootFS, open_sandbox: OpenSandbox, sh) -> None:
    peak: list[int] = []
    host_could_fork: list[bool] = []
    with open_sandbox(busybox, limits=Limits(pids=64)) as sandbox:

        def watch() -> None:
            # while the bomb runs: the job never exceeds its limit and the host can still fork
            time.sleep(0.5)
            peak.append(pids_current(sandbox))
            host_could_fork.append(subprocess.run(["true"], timeout=5).returncode == 0)

        watcher = threading.Thread(target=watch)
        watcher.start()
        started = time.monotonic()
        outcome, text = sh(sandbox, "bomb() { bomb | bomb & }; bomb; sleep 2", timeout_s=30)
        watcher.join()
        elapsed = time.monotonic() - started
        assert outcome.killed_by == "pids limit 64", (outcome, text[:300])
        assert not outcome.ok
        assert "can't fork" in text
        assert 0 < peak[0] <= 64
        assert host_could_fork == [True]
        assert elapsed < 10  # the step's end took the whole bomb with it
        assert processes_left(sandbox) == ""


def test_timeout_kills_the_whole_tree(busybox: RootFS, open_sandbox: OpenSandbox, sh) -> None:
    with open_sandbox(busybox) as sandbox:
        started = time.monotonic()
        outcome, _ = sh(sandbox, "sleep 600 & sleep 600", timeout_s=1)
        elapsed = time.monotonic() - started
        assert outcome.timed_out and outcome.killed_by == "timeout after 1 s"
        assert outcome.signal == 9 and outcome.exit_code is None and not outcome.ok
        assert 1 <= elapsed < 4
        assert processes_left(sandbox) == ""


def test_cancel_from_another_thread(busybox: RootFS, open_sandbox: OpenSandbox, sh) -> None:
    with open_sandbox(busybox) as sandbox:
        timer = threading.Timer(0.5, sandbox.cancel)
        timer.start()
        started = time.monotonic()
        outcome, _ = sh(sandbox, "sleep 600", timeout_s=None)
        elapsed = time.monotonic() - started
        timer.join()
        assert outcome.killed_by == "cancelled" and not outcome.timed_out and not outcome.ok
        assert elapsed < 3
        # cancellation is sticky: the job starts no further steps
        started = time.monotonic()
        outcome, text = sh(sandbox, "echo should-not-run")
        assert outcome.killed_by == "cancelled" and text == ""
        assert time.monotonic() - started < 0.5


def test_cpu_limit_throttles(busybox: RootFS, open_sandbox: OpenSandbox, sh) -> None:
    with open_sandbox(busybox, limits=Limits(cpus=0.2)) as sandbox:
        backend = detect_backend()
        if isinstance(backend, V1Backend):
            stat_file = backend.parents["cpu"] / f"{CGROUP_PREFIX}{sandbox.job_id}" / "cpu.stat"
        else:
            stat_file = backend.parent / f"{CGROUP_PREFIX}{sandbox.job_id}" / "cpu.stat"
        outcome, _ = sh(sandbox, "timeout 1 sh -c 'while :; do :; done'; true")
        assert outcome.ok
        stats = dict(line.split() for line in stat_file.read_text().splitlines())
        assert int(stats.get("nr_throttled", 0)) > 0


def test_nonzero_exit_is_reported_as_is(busybox: RootFS, open_sandbox: OpenSandbox, sh) -> None:
    with open_sandbox(busybox) as sandbox:
        outcome, _ = sh(sandbox, "exit 3")
    assert outcome.exit_code == 3 and outcome.signal is None and outcome.killed_by is None
    assert not outcome.ok


def test_run_outside_the_with_block_is_refused(busybox: RootFS, open_sandbox: OpenSandbox, sh) -> None:
    sandbox = open_sandbox(busybox)
    with pytest.raises(RuntimeError):
        sh(sandbox, "true")


def test_cleanup_when_output_callback_raises(
    busybox: RootFS, open_sandbox: OpenSandbox, state_dir: Path
) -> None:
    def explode(_: bytes) -> None:
        raise ValueError("log shipping failed")

    with open_sandbox(busybox) as sandbox, pytest.raises(ValueError, match="log shipping"):
        sandbox.run(
            ["sh", "-c", "echo hi; sleep 600"],
            env={"PATH": "/bin"},
            network=False,
            timeout_s=None,
            output=explode,
        )
    # the autouse fixture checks that no process, mount, cgroup or scratch dir is left


def test_a_broken_image_is_an_infrastructure_error_not_a_step_failure(
    open_sandbox: OpenSandbox, sh, tmp_path: Path
) -> None:
    broken = RootFS(name="broken", digest="sha256:" + "0" * 64, layers=(tmp_path / "missing-layer",))
    with open_sandbox(broken) as sandbox, pytest.raises(SandboxUnavailable, match="cannot mount the overlay"):
        sh(sandbox, "echo never")
