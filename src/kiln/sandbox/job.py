"""JobSandbox: one job's filesystem and cgroups, and running its steps one at a time.

Threading contract (read this before calling :meth:`JobSandbox.run`):

* ``run`` blocks the calling thread until the step's last process is gone. bwrap runs with
  ``--die-with-parent`` (PR_SET_PDEATHSIG), which the kernel fires when the *thread* that spawned
  it exits, so the spawning thread must outlive the step; since ``run`` itself blocks in that
  thread until the end, this holds by construction — never hand ``run`` to a short-lived
  worker thread that could be torn down independently of the step.
* ``cancel`` may be called from any thread at any time; it is sticky (later ``run`` calls
  return "cancelled" at once), because a job that is being cancelled must not start new steps.
* One step at a time per sandbox.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import selectors
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType

from kiln.errors import SandboxUnavailable
from kiln.sandbox.base import WORKSPACE, Limits, RootFS, StepOutcome, format_size
from kiln.sandbox.cgroups import CGROUP_PREFIX, CgroupCounters, JobCgroup
from kiln.sandbox.launcher import bwrap_argv, launcher_argv, overlay_options, validate_env
from kiln.sandbox.probe import SYSTEM_PATH, Capabilities, ensure_capabilities
from kiln.sandbox.scratch import Scratch, create_scratch, remove_tree

__all__ = ["JobSandbox", "describe_kill"]

logger = logging.getLogger(__name__)

_READ_SIZE = 64 * 1024
_KILL_GRACE_S = 10.0  # after SIGKILL, how long the step may take to disappear before we give up
_LAUNCHER_ERROR_LIMIT = 4096


def describe_kill(
    *,
    limits: Limits,
    cancelled: bool,
    timeout_s: float | None,
    timed_out: bool,
    before: CgroupCounters,
    after: CgroupCounters,
) -> str | None:
    """Say why a step was stopped, for humans, or None if nothing stopped it.

    Cancellation and timeouts are kiln's own doing. Limits are attributed from the cgroup's event
    counters (read before and after the step), whatever the exit code: a fork bomb or a build
    tool that lost a fork usually ends with an exit code, often even 0, not a signal, and a step
    that hit a limit did not run as written, so it must not count as a success.
    """
    if cancelled:
        return "cancelled"
    if timed_out:
        return f"timeout after {timeout_s:g} s"
    if after.oom_kills > before.oom_kills:
        limit = format_size(limits.memory_bytes) if limits.memory_bytes is not None else "(none set)"
        return f"memory limit {limit}"
    if after.pids_max_hits > before.pids_max_hits:
        return f"pids limit {limits.pids if limits.pids is not None else '(none set)'}"
    return None


def _job_id(name: str) -> str:
    # Used in a cgroup name and a directory name: one short, safe path segment, made unique.
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:40].strip(".") or "job"
    return f"{safe}-{secrets.token_hex(4)}"


class JobSandbox:
    """One job's sandbox: its steps share one overlay upper, one HOME and one set of cgroups.

    Parameters
    ----------
    rootfs
        The image: read-only layers and binds.
    workspace
        Host directory mounted read-write at ``/workspace``.
    state_dir
        The runner's state directory; scratch space is made under ``<state_dir>/sandboxes``.
    name
        A label for the job (e.g. its id), used in cgroup and directory names.
    limits
        Memory, pids and CPU limits for the job as a whole.
    hostname
        The hostname steps see.
    build
        Run steps as an image build step (see :func:`~kiln.sandbox.launcher.bwrap_argv`).
    """

    def __init__(
        self,
        rootfs: RootFS,
        workspace: Path,
        *,
        state_dir: Path,
        name: str,
        limits: Limits,
        hostname: str = "kiln",
        build: bool = False,
    ) -> None:
        self.rootfs = rootfs
        # Absolute paths: they go into mount options and into the owner record read by reapers.
        self.workspace = workspace.resolve()
        self.state_dir = state_dir.resolve()
        self.name = name
        self.limits = limits
        self.hostname = hostname
        self.build = build
        self.job_id = _job_id(name)
        self._caps: Capabilities | None = None
        self._cgroup: JobCgroup | None = None
        self._scratch: Scratch | None = None
        self._lock = threading.Lock()
        self._cancelled = threading.Event()
        self._wake_r: int | None = None
        self._wake_w: int | None = None
        self._running = False

    # -- lifecycle ------------------------------------------------------------------------------

    def __enter__(self) -> JobSandbox:
        """Probe the machine, then create the scratch dir and the job cgroup with its limits.

        Raises
        ------
        SandboxUnavailable
            When the machine cannot sandbox, naming what is missing.
        """
        if self._scratch is not None or self._caps is not None:
            raise RuntimeError("a JobSandbox can be entered only once")
        if not self.workspace.is_dir():
            raise FileNotFoundError(f"workspace {self.workspace} is not a directory")
        caps = ensure_capabilities(self.state_dir)
        self._caps = caps
        cgroup = caps.cgroups.plan(CGROUP_PREFIX + self.job_id)
        # The scratch dir (with the planned cgroup paths in its owner record) comes first, so a
        # crash at any later point leaves something reap_orphans can find and undo.
        self._scratch = create_scratch(self.state_dir, self.job_id, cgroup.record())
        try:
            cgroup.make()
            self._cgroup = cgroup
            try:
                cgroup.set_limits(self.limits)
            except OSError as exc:
                raise SandboxUnavailable(f"cannot set the job's limits {self.limits}: {exc}") from exc
            self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        except BaseException:
            self.close()
            raise
        logger.info(
            "Job sandbox created.",
            extra={"action": "sandbox_created", "job_id": self.job_id, "image": self.rootfs.name},
        )
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Kill whatever is left, remove the cgroups and the scratch dir. Never raises; logs."""
        cgroup, scratch = self._cgroup, self._scratch
        if cgroup is not None:
            try:
                if not cgroup.kill_all():
                    logger.error("Processes of job %s survived SIGKILL.", self.job_id)
                cgroup.remove()
                self._cgroup = None
            except Exception:
                logger.exception(
                    "Could not remove the job cgroup; reap_orphans will retry.",
                    extra={"action": "sandbox_cleanup_failed", "job_id": self.job_id},
                )
        if scratch is not None and self._cgroup is None:
            # Only once the cgroup is gone: the scratch dir's owner record is how a later reaper
            # finds a cgroup we could not remove.
            try:
                remove_tree(scratch.root)
                self._scratch = None
            except Exception:
                logger.exception(
                    "Could not remove the job scratch dir; reap_orphans will retry.",
                    extra={"action": "sandbox_cleanup_failed", "job_id": self.job_id},
                )
        with self._lock:
            for fd in (self._wake_r, self._wake_w):
                if fd is not None:
                    os.close(fd)
            self._wake_r = self._wake_w = None

    # -- steps -----------------------------------------------------------------------------------

    def host_path(self, path: str) -> Path:
        """The host path holding ``path`` (absolute, inside the sandbox) between steps.

        ``/workspace/…`` is the workspace; anything else is in the overlay upper, where the job's
        writes land (its HOME included). Between steps nothing is mounted, so the runner may read
        and write there; files that only the image's read-only layers hold are not in the upper.
        """
        if self._scratch is None:
            raise RuntimeError("the sandbox is not entered")
        inner = Path(path)
        if not inner.is_absolute() or ".." in inner.parts:
            raise ValueError(f"not an absolute, normalised sandbox path: {path!r}")
        if inner == Path(WORKSPACE) or Path(WORKSPACE) in inner.parents:
            return self.workspace / inner.relative_to(WORKSPACE)
        return self._scratch.upper / inner.relative_to("/")

    def cancel(self) -> None:
        """Kill the running step's whole tree promptly, and refuse further steps. Thread-safe."""
        self._cancelled.set()
        with self._lock:
            if self._wake_w is not None:
                with contextlib.suppress(BlockingIOError):
                    os.write(self._wake_w, b"x")

    def run(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        network: bool,
        timeout_s: float | None,
        output: Callable[[bytes], None],
        cwd: str = WORKSPACE,
        binds: Sequence[tuple[Path, str]] = (),
    ) -> StepOutcome:
        """Run one step and block until its last process is gone.

        Parameters
        ----------
        argv
            The command, resolved inside the sandbox against ``env["PATH"]``.
        env
            The complete environment of the step; nothing else is passed in, except ``PWD``,
            which bubblewrap always sets to ``cwd`` (as a shell would).
        network
            Share the host's network; otherwise the step has only loopback.
        timeout_s
            Wall-clock limit; None for none.
        output
            Called with chunks of combined stdout and stderr as they arrive, in this thread.
        cwd
            Working directory inside the sandbox.
        binds
            Extra read-write ``(host path, path inside)`` binds for this step (cache mounts).

        Returns
        -------
        StepOutcome
            How the step ended, with ``killed_by`` saying why kiln or a limit stopped it.

        Raises
        ------
        SandboxUnavailable
            When the sandbox could not be set up for the step (cgroup join or overlay mount
            failed), or the step's processes could not be killed.
        """
        if self._caps is None or self._cgroup is None or self._scratch is None or self._wake_r is None:
            raise RuntimeError("JobSandbox.run() called outside its `with` block")
        if self._cancelled.is_set():
            return StepOutcome(None, None, "cancelled", False, 0.0)
        with self._lock:
            if self._running:
                raise RuntimeError("a JobSandbox runs one step at a time")
            self._running = True
        try:
            return self._run(argv, env, network, timeout_s, output, cwd, binds)
        finally:
            with self._lock:
                self._running = False

    def _argv(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        network: bool,
        cwd: str,
        binds: Sequence[tuple[Path, str]] = (),
    ) -> list[str]:
        assert self._caps is not None and self._cgroup is not None and self._scratch is not None
        scratch = self._scratch
        lowers = list(self.rootfs.layers) or [scratch.base]
        inner = bwrap_argv(
            self._caps.tools.bwrap,
            merged=scratch.merged,
            ro_binds=self.rootfs.ro_binds,
            workspace=self.workspace,
            env=env,
            network=network,
            hostname=self.hostname,
            cwd=cwd,
            argv=argv,
            binds=binds,
            build=self.build,
        )
        return launcher_argv(
            self._caps.tools,
            procs_files=self._cgroup.procs_files,
            overlay_opts=overlay_options(lowers, scratch.upper, scratch.work),
            merged=scratch.merged,
            bwrap=inner,
        )

    def _run(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        network: bool,
        timeout_s: float | None,
        output: Callable[[bytes], None],
        cwd: str,
        binds: Sequence[tuple[Path, str]] = (),
    ) -> StepOutcome:
        assert self._cgroup is not None and self._wake_r is not None
        cgroup = self._cgroup
        validate_env(env)
        command = self._argv(argv, env, network, cwd, binds)
        before = cgroup.counters()
        self._drain_wake()

        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        started = time.monotonic()
        try:
            proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=out_w,
                stderr=err_w,
                # bwrap --clearenv drops this anyway; passing a minimal env means even a launcher
                # bug cannot leak the runner's environment (tokens!) into a step.
                env={"PATH": SYSTEM_PATH},
                cwd="/",
                close_fds=True,
                start_new_session=True,
            )
        except BaseException:
            for fd in (out_r, out_w, err_r, err_w):
                os.close(fd)
            raise
        os.close(out_w)
        os.close(err_w)
        try:
            cancelled, timed_out = self._pump(proc, out_r, timeout_s, started, output)
        finally:
            if proc.poll() is None:  # output() raised, or we gave up: never leave the step running
                cgroup.kill_all()
                proc.kill()
                try:
                    proc.wait(timeout=_KILL_GRACE_S)
                except subprocess.TimeoutExpired:
                    logger.error("bwrap of job %s did not die after SIGKILL.", self.job_id)
            os.close(out_r)
            # Anything the step started and left (it cannot escape the cgroup) goes now, so the
            # next step's overlay mount finds the upper dir free.
            survivors = not cgroup.kill_all()
            launcher_error = _read_all(err_r)
        duration_s = time.monotonic() - started
        if survivors:
            raise SandboxUnavailable(f"processes of job {self.job_id} survived SIGKILL")

        code = proc.returncode
        if code != 0 and launcher_error and not (cancelled or timed_out):
            raise SandboxUnavailable(f"the sandbox could not start the step: {launcher_error.strip()}")

        exit_code: int | None = code if code >= 0 else None
        sig: int | None = -code if code < 0 else None
        killed_by = describe_kill(
            limits=self.limits,
            cancelled=cancelled,
            timeout_s=timeout_s,
            timed_out=timed_out,
            before=before,
            after=cgroup.counters(),
        )
        # These end in SIGKILL; bwrap reports a killed child as 128+signal, as a shell does.
        killed = killed_by is not None and killed_by.startswith(("cancelled", "timeout", "memory"))
        if killed and (exit_code == 128 + signal.SIGKILL or sig == signal.SIGKILL):
            exit_code, sig = None, int(signal.SIGKILL)
        return StepOutcome(
            exit_code=exit_code,
            signal=sig,
            killed_by=killed_by,
            timed_out=timed_out,
            duration_s=duration_s,
        )

    def _pump(
        self,
        proc: subprocess.Popen[bytes],
        out_r: int,
        timeout_s: float | None,
        started: float,
        output: Callable[[bytes], None],
    ) -> tuple[bool, bool]:
        """Stream output until the step has exited and its output is closed; enforce timeout and
        cancel. Returns ``(cancelled, timed_out)``."""
        assert self._cgroup is not None and self._wake_r is not None
        deadline = started + timeout_s if timeout_s is not None else None
        cancelled = timed_out = False
        killed_at: float | None = None
        pidfd = os.pidfd_open(proc.pid)
        try:
            with selectors.DefaultSelector() as selector:
                selector.register(out_r, selectors.EVENT_READ, "out")
                selector.register(pidfd, selectors.EVENT_READ, "exit")
                selector.register(self._wake_r, selectors.EVENT_READ, "wake")
                output_open, exited = True, False
                while output_open or not exited:
                    now = time.monotonic()
                    if killed_at is None:
                        if self._cancelled.is_set():
                            cancelled = True
                        elif deadline is not None and now >= deadline:
                            timed_out = True
                        if cancelled or timed_out:
                            killed_at = now
                            self._kill(proc)
                    elif now - killed_at > _KILL_GRACE_S:
                        raise SandboxUnavailable(
                            f"the step of job {self.job_id} did not end {_KILL_GRACE_S:g} s after SIGKILL"
                        )
                    wait = (
                        1.0 if killed_at is not None else (deadline - now if deadline is not None else None)
                    )
                    for key, _ in selector.select(None if wait is None else max(wait, 0.0)):
                        if key.data == "out":
                            data = os.read(out_r, _READ_SIZE)
                            if data:
                                output(data)
                            else:
                                output_open = False
                                selector.unregister(out_r)
                        elif key.data == "exit":
                            exited = True
                            selector.unregister(pidfd)
                            proc.wait()
                        else:
                            self._drain_wake()
                    if exited and output_open and killed_at is None:
                        # bwrap is gone (so is its pid namespace) but the pipe is not closed yet:
                        # usually just unread output. Killing the empty cgroup is cheap, and the
                        # grace period above bounds the wait if something odd holds the pipe.
                        killed_at = time.monotonic()
                        self._kill(proc)
        finally:
            os.close(pidfd)
        return cancelled, timed_out

    def _kill(self, proc: subprocess.Popen[bytes]) -> None:
        assert self._cgroup is not None
        # bwrap is our child; killing it directly also covers the instant before it joined the cgroup.
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGKILL)
        self._cgroup.kill_all(timeout_s=_KILL_GRACE_S)

    def _drain_wake(self) -> None:
        assert self._wake_r is not None
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wake_r, 1024):
                pass


def _read_all(fd: int) -> str:
    """Read what the launcher wrote to its private stderr (it has exited, so EOF is near)."""
    chunks: list[bytes] = []
    try:
        os.set_blocking(fd, False)
        with contextlib.suppress(BlockingIOError):
            while chunk := os.read(fd, 4096):
                chunks.append(chunk)
                if sum(map(len, chunks)) > _LAUNCHER_ERROR_LIMIT:
                    break
    finally:
        os.close(fd)
    return b"".join(chunks).decode(errors="replace")[:_LAUNCHER_ERROR_LIMIT]
