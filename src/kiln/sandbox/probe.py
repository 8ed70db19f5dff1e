"""Check, once per process and state dir, that this machine can run kiln's sandbox.

Each check exercises the real feature (a mount namespace is entered, an overlay is mounted in the
state dir, bubblewrap creates its namespaces, a cgroup is created and limited) rather than
inferring it from version numbers, and a failure names exactly what is missing. kiln never falls
back to running a step unsandboxed.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

from kiln.errors import SandboxUnavailable
from kiln.sandbox.base import Limits
from kiln.sandbox.cgroups import CGROUP_PREFIX, CgroupBackend, detect_backend
from kiln.sandbox.launcher import Tools, overlay_options

__all__ = ["Capabilities", "ensure_capabilities", "probe"]

# Where to look for the host programs: never the runner's own PATH, which a job's environment
# or a user's shell could have changed.
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_PROBE_TIMEOUT_S = 10.0

_cache: dict[Path, Capabilities] = {}
_cache_lock = threading.Lock()


@dataclass(frozen=True)
class Capabilities:
    """What the probe found: the tools to launch with and the cgroup backend to use."""

    tools: Tools
    cgroups: CgroupBackend


def probe(state_dir: Path) -> None:
    """Check that this machine can run sandboxed steps with scratch space under ``state_dir``.

    Parameters
    ----------
    state_dir
        The runner's state directory (created if missing); overlays are mounted there.

    Raises
    ------
    SandboxUnavailable
        Naming what is missing: root, the bwrap/unshare/mount binaries, mount namespaces,
        overlayfs, bubblewrap's namespaces, or a writable memory/pids/cpu cgroup controller.
    """
    ensure_capabilities(state_dir)


def ensure_capabilities(state_dir: Path) -> Capabilities:
    """Like :func:`probe`, returning what it found. Successes are cached per process."""
    key = state_dir.resolve()
    with _cache_lock:
        cached = _cache.get(key)
        if cached is not None:
            return cached
        try:
            found = _probe(key)
        except SandboxUnavailable as exc:
            # Say which component failed, so "no mount namespaces" is not mistaken for a job's error.
            raise SandboxUnavailable(f"the sandbox cannot start on this machine: {exc.message}") from exc
        _cache[key] = found
        return found


def _probe(state_dir: Path) -> Capabilities:
    if os.geteuid() != 0:
        raise SandboxUnavailable(
            f"kiln's sandbox must run as root (euid is {os.geteuid()}): "
            "it mounts overlayfs and creates cgroups"
        )
    tools = Tools(
        unshare=_which("unshare", "util-linux"),
        sh=_which("sh", "dash"),
        bwrap=_which("bwrap", "bubblewrap"),
    )
    _which("mount", "mount")  # used by the launcher script through SYSTEM_PATH
    _check_pidfd()
    if "overlay" not in Path("/proc/filesystems").read_text().split():
        raise SandboxUnavailable("the kernel has no overlayfs (overlay is missing from /proc/filesystems)")

    state_dir.mkdir(parents=True, exist_ok=True)
    _check_mount_namespace_and_overlay(tools, state_dir)
    _check_bwrap(tools)
    backend = detect_backend()
    _check_cgroups(backend)
    return Capabilities(tools=tools, cgroups=backend)


def _check_pidfd() -> None:
    # run() waits for a step's exit and its output in one select(); that needs pidfds (Linux 5.3).
    try:
        os.close(os.pidfd_open(os.getpid()))
    except (AttributeError, OSError) as exc:
        raise SandboxUnavailable(f"no pidfd support (Linux 5.3+ and Python 3.9+ needed): {exc}") from exc


def _which(program: str, package: str) -> str:
    found = shutil.which(program, path=SYSTEM_PATH)
    if found is None:
        raise SandboxUnavailable(
            f"no {program} binary on {SYSTEM_PATH} (install the Debian package {package})"
        )
    return found


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env={"PATH": SYSTEM_PATH},
        timeout=_PROBE_TIMEOUT_S,
        check=False,
    )


def _check_mount_namespace_and_overlay(tools: Tools, state_dir: Path) -> None:
    result = _run([tools.unshare, "--mount", "--propagation", "private", "--", "/bin/true"])
    if result.returncode != 0:
        raise SandboxUnavailable(f"no mount namespaces (unshare --mount failed: {result.stderr.strip()})")

    root = state_dir / f".probe-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        for sub in ("lower", "upper", "work", "merged"):
            (root / sub).mkdir(parents=True)
        (root / "lower" / "probe").write_text("ok\n")
        options = overlay_options([root / "lower"], root / "upper", root / "work")
        script = 'mount -t overlay -o "$1" kiln-probe "$2" && echo x > "$2/written" && cat "$2/probe"'
        unshare = [tools.unshare, "--mount", "--propagation", "private", "--"]
        result = _run([*unshare, tools.sh, "-c", script, "probe", options, str(root / "merged")])
        if result.returncode != 0 or result.stdout != "ok\n" or not (root / "upper" / "written").exists():
            raise SandboxUnavailable(
                f"overlayfs is not mountable with its upper dir in {state_dir} "
                f"(it must not itself be on overlayfs): {result.stderr.strip()}"
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _check_bwrap(tools: Tools) -> None:
    # The same namespace flags a step uses; binding the host / is harmless for running `true`.
    argv = [tools.bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
    argv += ["--unshare-all", "--unshare-user", "--disable-userns", "--cap-drop", "ALL"]
    argv += ["--die-with-parent", "--new-session", "--clearenv", "--", "/bin/true"]
    result = _run(argv)
    if result.returncode != 0:
        raise SandboxUnavailable(
            "bubblewrap cannot create the user/pid/network/ipc/uts/cgroup namespaces a step needs "
            f"(or disable nested user namespaces): {result.stderr.strip()}"
        )


def _check_cgroups(backend: CgroupBackend) -> None:
    cgroup = backend.plan(f"{CGROUP_PREFIX}probe-{os.getpid()}-{secrets.token_hex(4)}")
    cgroup.make()
    try:
        for name, limits in (
            ("memory", Limits(memory_bytes=64 << 20)),
            ("pids", Limits(pids=64)),
            ("cpu", Limits(cpus=0.5)),
        ):
            try:
                cgroup.set_limits(limits)
            except OSError as exc:
                raise SandboxUnavailable(
                    f"the {name} cgroup controller is not writable ({backend.name}): {exc}"
                ) from exc
    finally:
        cgroup.remove()
