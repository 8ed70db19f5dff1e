"""Fixtures for the sandbox tests on the real kernel: images, a per-test state dir, a workspace,
and a check after every test that nothing (mount, process, cgroup, scratch dir) was left behind.

These tests need root, bubblewrap, overlayfs and writable cgroups. They do not skip when one is
missing: kiln refuses to run unsandboxed, so a missing feature must fail loudly here too.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kiln.images import busybox_image, host_image
from kiln.sandbox import JobSandbox, Limits, RootFS, StepOutcome, probe
from kiln.sandbox import job as sandbox_job
from kiln.sandbox.cgroups import CGROUP_PREFIX, V1Backend, V2Backend, detect_backend

BUSYBOX_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}


@pytest.fixture(scope="session")
def images_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    state = tmp_path_factory.mktemp("images")
    probe(state)  # raises SandboxUnavailable naming the missing feature: no silent skip
    return state


@pytest.fixture(scope="session")
def busybox(images_dir: Path) -> RootFS:
    return busybox_image(images_dir)


@pytest.fixture(scope="session")
def host(images_dir: Path) -> RootFS:
    return host_image(images_dir)


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    path = tmp_path / "state"
    path.mkdir()
    return path


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    path = tmp_path / "ws"
    path.mkdir()
    (path / "README").write_text("workspace file\n")
    return path


class Collector:
    """An ``output`` callback that keeps every chunk and when it arrived."""

    def __init__(self) -> None:
        self.chunks: list[tuple[float, bytes]] = []

    def __call__(self, data: bytes) -> None:
        import time

        self.chunks.append((time.monotonic(), data))

    @property
    def text(self) -> str:
        return b"".join(c for _, c in self.chunks).decode(errors="replace")


@pytest.fixture
def collect() -> Callable[[], Collector]:
    """Make output collectors."""
    return Collector


ShRunner = Callable[..., tuple[StepOutcome, str]]


@pytest.fixture
def sh() -> ShRunner:
    """``sh(sandbox, script, network=False, timeout_s=20)`` → (outcome, combined output)."""

    def run(
        sandbox: JobSandbox, script: str, *, network: bool = False, timeout_s: float | None = 20
    ) -> tuple[StepOutcome, str]:
        out = Collector()
        outcome = sandbox.run(
            ["sh", "-c", script], env=BUSYBOX_ENV, network=network, timeout_s=timeout_s, output=out
        )
        return outcome, out.text

    return run


@pytest.fixture
def open_sandbox(workspace: Path, state_dir: Path) -> Callable[..., JobSandbox]:
    """``open_sandbox(rootfs, name="job", limits=Limits(pids=256))`` → an un-entered JobSandbox."""

    def make(rootfs: RootFS, name: str = "job", limits: Limits | None = None) -> JobSandbox:
        return JobSandbox(
            rootfs, workspace, state_dir=state_dir, name=name, limits=limits or Limits(pids=256)
        )

    return make


def _kiln_cgroup_dirs() -> set[str]:
    backend = detect_backend()
    parents = backend.parents.values() if isinstance(backend, V1Backend) else [backend.parent]
    assert isinstance(backend, V1Backend | V2Backend)
    return {str(p / name) for p in parents for name in os.listdir(p) if name.startswith(CGROUP_PREFIX)}


def _processes_of(marker: str, job_ids: list[str]) -> set[str]:
    """Processes in these jobs' cgroups or whose command line mentions ``marker`` (the test's tmp dir)."""
    found = set()
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            cgroups = Path(f"/proc/{pid}/cgroup").read_text()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if any(f"/{CGROUP_PREFIX}{j}" in cgroups for j in job_ids) or marker in cmdline:
            found.add(f"{pid}: {cmdline}")
    return found


def _mounts_mentioning(marker: str) -> list[str]:
    return [line for line in Path("/proc/self/mountinfo").read_text().splitlines() if marker in line]


@pytest.fixture(autouse=True)
def nothing_left_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    marker = str(tmp_path)
    # Only this test's jobs count: other kiln processes on the machine may own cgroups meanwhile.
    job_ids: list[str] = []
    real_job_id = sandbox_job._job_id

    def recording_job_id(name: str) -> str:
        job_ids.append(real_job_id(name))
        return job_ids[-1]

    monkeypatch.setattr(sandbox_job, "_job_id", recording_job_id)
    mounts_before = Path("/proc/self/mountinfo").read_text()
    yield
    assert _mounts_mentioning(marker) == []
    assert Path("/proc/self/mountinfo").read_text() == mounts_before
    assert {d for d in _kiln_cgroup_dirs() if any(d.endswith(CGROUP_PREFIX + j) for j in job_ids)} == set()
    assert _processes_of(marker, job_ids) == set()
    sandboxes = tmp_path / "state" / "sandboxes"
    assert not sandboxes.exists() or os.listdir(sandboxes) == []
