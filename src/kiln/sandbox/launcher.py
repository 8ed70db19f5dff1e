"""The command line that launches one step: join cgroups, private mount ns, overlay, bubblewrap.

Debian 12 ships bubblewrap 0.8, which cannot mount overlays (``--overlay`` came in 0.11), so the
overlay is mounted by a tiny ``sh`` script that runs inside ``unshare --mount --propagation
private``: the mount exists only in that new namespace and disappears with the step's last process.
The script then ``exec``s bwrap, so the pid we spawned *is* bwrap; ``--die-with-parent`` ties it to
the thread that spawned it.

Everything here is pure (argv construction and validation) so it can be unit-tested.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from kiln.errors import SandboxUnavailable
from kiln.sandbox.base import WORKSPACE

__all__ = [
    "BUILD_CAPABILITIES",
    "LAUNCHER_FAILED_EXIT",
    "LAUNCHER_SCRIPT",
    "MAX_LOWER_LAYERS",
    "MAX_MOUNT_OPTIONS",
    "Tools",
    "bwrap_argv",
    "launcher_argv",
    "overlay_options",
    "validate_env",
]

MAX_LOWER_LAYERS = 500
"""The kernel's OVL_MAX_STACK."""

MAX_MOUNT_OPTIONS = 4095
"""The mount data string is one page, NUL included."""

LAUNCHER_FAILED_EXIT = 125

BUILD_CAPABILITIES = (
    "CAP_AUDIT_WRITE",
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_NET_BIND_SERVICE",
    "CAP_SETFCAP",
    "CAP_SETGID",
    "CAP_SETPCAP",
    "CAP_SETUID",
    "CAP_SYS_CHROOT",
)
"""What an image build step keeps: Docker's default set without MKNOD and NET_RAW. Package
managers chown files to system users (``_apt``, ``man``) and drop privileges, which needs real uids
(no user namespace) and these capabilities; nothing here can mount, load modules or reach devices."""

# Runs as pid P inside the new mount namespace, arguments:
#   N, then N cgroup.procs files, overlay-options, merged-dir, bwrap-argv...
# It writes errors to its own stderr (a pipe only kiln reads), then points stderr at the step's
# output just before exec, so bwrap's and the step's messages reach the log and ours do not.
# Joining the cgroups first means bwrap and everything below it are accounted and killable.
LAUNCHER_SCRIPT = """\
fail() { echo "kiln launcher: $*" >&2; exit 125; }
n=$1; shift
while [ "$n" -gt 0 ]; do
    echo $$ > "$1" || fail "cannot join cgroup $1"
    shift; n=$((n - 1))
done
mount -t overlay -o "$1" kiln-overlay "$2" || fail "cannot mount the overlay on $2"
shift 2
exec 2>&1
exec "$@"
"""


@dataclass(frozen=True)
class Tools:
    """Absolute paths of the host programs the launcher uses (found by the probe)."""

    unshare: str
    sh: str
    bwrap: str


def _check_overlay_path(path: Path) -> str:
    text = str(path)
    # ',' separates mount options and ':' separates lower dirs; both can be escaped in theory,
    # but refusing them keeps the option string trivially correct.
    if not path.is_absolute() or any(c in text for c in ",:\\\n"):
        raise SandboxUnavailable(f"overlay path {text!r} must be absolute and free of ',', ':' and '\\'")
    return text


def overlay_options(lowers: Sequence[Path], upper: Path, work: Path) -> str:
    """The ``mount -t overlay -o`` option string; ``lowers`` are top first.

    Raises
    ------
    SandboxUnavailable
        With no lower dir, too many (kernel limit 500), a path overlayfs cannot take, or an
        option string longer than a page (keep layer paths short).
    """
    if not lowers:
        raise SandboxUnavailable("an overlay needs at least one lower directory")
    if len(lowers) > MAX_LOWER_LAYERS:
        raise SandboxUnavailable(
            f"the image has {len(lowers)} layers; overlayfs stacks at most {MAX_LOWER_LAYERS}"
        )
    lowerdir = ":".join(_check_overlay_path(p) for p in lowers)
    options = f"lowerdir={lowerdir},upperdir={_check_overlay_path(upper)},workdir={_check_overlay_path(work)}"
    if len(options) > MAX_MOUNT_OPTIONS:
        raise SandboxUnavailable(
            f"overlay mount options are {len(options)} bytes, over the kernel's {MAX_MOUNT_OPTIONS}: "
            "the layer paths are too long or too many"
        )
    return options


def validate_env(env: Mapping[str, str]) -> None:
    """Refuse environment entries execve cannot carry (``=`` in a name, NUL anywhere)."""
    for key, value in env.items():
        if not key or "=" in key or "\0" in key or "\0" in value:
            raise ValueError(f"invalid environment variable name or value: {key!r}")


def bwrap_argv(
    bwrap: str,
    *,
    merged: Path,
    ro_binds: Sequence[tuple[Path, str]],
    workspace: Path,
    env: Mapping[str, str],
    network: bool,
    hostname: str,
    cwd: str,
    argv: Sequence[str],
    binds: Sequence[tuple[Path, str]] = (),
    build: bool = False,
) -> list[str]:
    """The bubblewrap command line for one step. Why each flag:

    * ``--bind merged /``: the job's overlay (read-only image layers + the job's writable upper)
      is the whole root; nothing of the host is visible unless bound below.
    * ``--ro-bind``: image-provided host directories (the host image's /usr), read-only.
    * ``--bind workspace /workspace``: the only host directory the step may write.
    * ``--dev``, ``--proc``: a minimal /dev and a /proc of the step's own pid namespace.
    * ``--ro-bind /proc/sys /proc/sys``: the step runs as uid 0, which *is* the host's root uid
      (no uid shift yet), and sysctl files check only the uid, not capabilities. bwrap covers
      /proc/sys only if the directory itself is writable, which it never is, so without this a
      step could write host-wide sysctls such as kernel.core_pattern (measured: writes worked).
      Sysctl files act on the namespaces of the process that opens them, so binding the host's
      /proc/sys shows the step its own network namespace's values.
    * ``--perms 1777 --tmpfs /tmp``: a private /tmp per step, writable by any uid (apt's _apt).
    * ``--unshare-all --unshare-user``: new user, pid, ipc, uts, cgroup and network namespaces;
      the network namespace has only ``lo``. ``--share-net`` keeps the host network when asked.
      The user namespace is required (not "try"), because ``--disable-userns`` needs it.
    * ``--disable-userns``: no nested user namespaces, so a step cannot regain capabilities
      (``unshare -r``) and mount or unshare things of its own.
    * ``--cap-drop ALL``: run as root (uid 0, the owner of the workspace) but *without*
      capabilities. bwrap started by real root keeps every capability unless told otherwise
      (measured here: CapEff was full), which would let a step mount, or write its own cgroup.
    * ``--die-with-parent``: bwrap and the step die if the runner dies (PR_SET_PDEATHSIG).
    * ``--new-session``: setsid, so the step cannot push input into a terminal (TIOCSTI).
    * ``--clearenv`` + ``--setenv``: the step sees exactly ``env``, never the runner's.

    ``binds`` are extra read-write ``(host path, path inside)`` binds (an image build's cache
    mounts). ``build`` is for image build steps: no user namespace (real uids, so files can belong
    to system users) and :data:`BUILD_CAPABILITIES` instead of none; every other namespace as above.
    """
    validate_env(env)
    if not argv:
        raise ValueError("a step needs a command")
    if any("\0" in a for a in argv):
        raise ValueError("command arguments cannot contain NUL")
    if not cwd.startswith("/"):
        raise ValueError(f"cwd must be absolute inside the sandbox, got {cwd!r}")

    args = [bwrap, "--bind", str(merged), "/"]
    for host_path, inside in ro_binds:
        args += ["--ro-bind", str(host_path), inside]
    args += ["--bind", str(workspace), WORKSPACE]
    for host_path, inside in binds:
        args += ["--bind", str(host_path), inside]
    args += ["--dev", "/dev", "--proc", "/proc", "--ro-bind", "/proc/sys", "/proc/sys"]
    args += ["--perms", "1777", "--tmpfs", "/tmp"]
    if build:
        # Not --unshare-all: it includes a user namespace, which would map uid 0 alone.
        args += ["--unshare-ipc", "--unshare-pid", "--unshare-uts", "--unshare-cgroup"]
        args += [] if network else ["--unshare-net"]
        args += ["--cap-drop", "ALL"]
        for capability in BUILD_CAPABILITIES:
            args += ["--cap-add", capability]
    else:
        args += ["--unshare-all", "--unshare-user", "--disable-userns", "--cap-drop", "ALL"]
        if network:
            args += ["--share-net"]
    args += ["--die-with-parent", "--new-session", "--clearenv"]
    for key in sorted(env):
        args += ["--setenv", key, env[key]]
    args += ["--hostname", hostname, "--chdir", cwd, "--", *argv]
    return args


def launcher_argv(
    tools: Tools,
    *,
    procs_files: Sequence[Path],
    overlay_opts: str,
    merged: Path,
    bwrap: Sequence[str],
) -> list[str]:
    """The full argv to spawn: ``unshare`` → ``sh`` (join cgroups, mount overlay) → ``bwrap``."""
    return [
        tools.unshare,
        "--mount",
        "--propagation",
        "private",
        "--",
        tools.sh,
        "-c",
        LAUNCHER_SCRIPT,
        "kiln-launcher",  # $0
        str(len(procs_files)),
        *(os.fspath(p) for p in procs_files),
        overlay_opts,
        str(merged),
        *bwrap,
    ]
