"""Job cgroups: limits, membership, whole-tree kill and kill attribution, on cgroup v1 or v2.

Machines differ: some run the hybrid v1 layout (memory, cpu, pids and freezer on v1 hierarchies
under ``/sys/fs/cgroup/<controller>/``, no systemd), others pure v2. Both backends create the job's
cgroups *under kiln's own cgroup* (read from ``/proc/self/cgroup``), never at the root of a
hierarchy, so kiln stays inside whatever its supervisor gave it.

A :class:`JobCgroup` is deliberately rebuilt from plain paths (:meth:`JobCgroup.record` /
:func:`job_cgroup_from_record`), so that :mod:`kiln.sandbox.orphans` can kill and remove the
cgroups of a runner that died without cleaning up.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from kiln.errors import SandboxUnavailable
from kiln.sandbox.base import Limits
from kiln.sandbox.mountinfo import unescape

__all__ = [
    "CGROUP_PREFIX",
    "CgroupBackend",
    "CgroupCounters",
    "JobCgroup",
    "V1Backend",
    "V1JobCgroup",
    "V2Backend",
    "V2JobCgroup",
    "cgroup_dir",
    "detect_backend",
    "enable_controllers",
    "job_cgroup_from_record",
    "parse_cgroup_mounts",
    "parse_flat_keyed",
    "parse_proc_cgroup",
]

logger = logging.getLogger(__name__)

CGROUP_PREFIX = "kiln-"
"""Every job cgroup's directory name starts with this; the reaper refuses anything else."""

REQUIRED_CONTROLLERS = ("memory", "pids", "cpu")
CFS_PERIOD_US = 100_000
_KILL_POLL_S = 0.01


@dataclass(frozen=True)
class CgroupCounters:
    """Event counters read after a step, compared with those read before it to attribute a kill."""

    oom_kills: int
    pids_max_hits: int


class JobCgroup(Protocol):
    """The cgroup(s) of one job, on whichever backend."""

    @property
    def directories(self) -> tuple[Path, ...]:
        """Every directory of the job cgroup (one per v1 hierarchy, one on v2)."""
        ...

    @property
    def procs_files(self) -> tuple[Path, ...]:
        """``cgroup.procs`` files a launcher writes its pid into (one per v1 hierarchy, one on v2)."""
        ...

    def make(self) -> None:
        """Create the directories; raises SandboxUnavailable naming the controller that failed."""
        ...

    def set_limits(self, limits: Limits) -> None:
        """Write the job's limits."""
        ...

    def pids(self) -> set[int]:
        """Pids of every process in the job's cgroup(s)."""
        ...

    def kill_all(self, timeout_s: float = 5.0) -> bool:
        """SIGKILL every process in the cgroup(s) until none is left; False if some survived."""
        ...

    def counters(self) -> CgroupCounters:
        """Current OOM-kill and pids-limit counters."""
        ...

    def remove(self) -> None:
        """Remove the (empty) cgroup directories; raises OSError if one cannot be removed."""
        ...

    def record(self) -> dict[str, Any]:
        """A JSON-able description from which :func:`job_cgroup_from_record` rebuilds this object."""
        ...


class CgroupBackend(Protocol):
    """Creates job cgroups below kiln's own cgroup."""

    name: str

    def plan(self, leaf: str) -> JobCgroup:
        """The job cgroup named ``leaf`` (must start with ``kiln-``), not created yet.

        Planning before creating lets the caller record the paths first, so a crash between the
        two never leaves a cgroup that no record points to.
        """
        ...


# -- parsing ---------------------------------------------------------------------------------------


def parse_proc_cgroup(text: str) -> dict[str, str]:
    """Parse ``/proc/<pid>/cgroup`` into ``{controller: path}``; the v2 entry has the key ``""``.

    A v1 line names one or more controllers (``2:cpu,cpuacct:/a``): each gets the same path.
    Named hierarchies (``name=systemd``) are kept under their ``name=…`` key.
    """
    result: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":
            result[""] = path
            continue
        for controller in controllers.split(","):
            result[controller] = path
    return result


@dataclass(frozen=True)
class CgroupMount:
    """Where a hierarchy is mounted and which of its cgroups is the mount's root."""

    mount_point: Path
    root: str


def parse_cgroup_mounts(mountinfo: str) -> tuple[dict[str, CgroupMount], CgroupMount | None]:
    """Parse ``/proc/self/mountinfo`` into the v1 mounts by controller and the v2 mount, if any.

    Returns
    -------
    tuple
        ``({controller: CgroupMount}, CgroupMount | None)``. The first mount of a controller wins.
    """
    v1: dict[str, CgroupMount] = {}
    v2: CgroupMount | None = None
    for line in mountinfo.splitlines():
        fields = line.split()
        try:
            sep = fields.index("-")
        except ValueError:
            continue
        if len(fields) < sep + 4:
            continue
        root, mount_point = unescape(fields[3]), unescape(fields[4])
        fstype, super_options = fields[sep + 1], fields[sep + 3]
        mount = CgroupMount(Path(mount_point), root)
        if fstype == "cgroup2" and v2 is None:
            v2 = mount
        elif fstype == "cgroup":
            for option in super_options.split(","):
                if option not in ("rw", "ro") and option not in v1:
                    v1[option] = mount
    return v1, v2


def cgroup_dir(mount: CgroupMount, own_path: str) -> Path:
    """The directory of the cgroup ``own_path`` (as in /proc/self/cgroup) inside ``mount``.

    Raises
    ------
    SandboxUnavailable
        When our cgroup is not below the mounted part of the hierarchy (e.g. a container that
        mounted only a sub-tree we are not in).
    """
    root = mount.root.rstrip("/")
    if root and own_path != root and not own_path.startswith(root + "/"):
        raise SandboxUnavailable(
            f"kiln's cgroup {own_path} is not visible under the cgroup mount {mount.mount_point} "
            f"(which shows {mount.root})"
        )
    relative = own_path[len(root) :].lstrip("/")
    return mount.mount_point / relative if relative else mount.mount_point


def parse_flat_keyed(text: str) -> dict[str, int]:
    """Parse a cgroup "flat keyed" file (``key value`` per line: memory.events, pids.events …)."""
    result: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        with contextlib.suppress(ValueError):
            result[key] = int(value.strip())
    return result


# -- helpers shared by both backends -----------------------------------------------------------------


def _write(path: Path, value: str) -> None:
    # One write() per value: cgroup files act on each write, and Python's buffered text I/O could
    # split it.
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _read_pids(procs_file: Path) -> set[int]:
    try:
        text = procs_file.read_text()
    except FileNotFoundError:
        return set()
    return {int(line) for line in text.split()}


def _read_counter(path: Path, key: str) -> int:
    try:
        return parse_flat_keyed(path.read_text()).get(key, 0)
    except FileNotFoundError:
        return 0


def _kill_loop(procs_files: Iterable[Path], timeout_s: float, freezer: Path | None = None) -> bool:
    """SIGKILL every pid listed until the cgroups are empty.

    A fork bomb can create processes between reading cgroup.procs and killing; freezing first
    (v1 freezer) stops that, and without a freezer the pids limit bounds it, so the loop ends.
    """
    files = tuple(procs_files)
    deadline = time.monotonic() + timeout_s
    while True:
        pids: set[int] = set()
        for procs_file in files:
            pids |= _read_pids(procs_file)
        if not pids:
            return True
        if time.monotonic() > deadline:
            logger.warning(
                "Processes survived SIGKILL in a job cgroup.",
                extra={"action": "cgroup_kill_timeout", "pids": sorted(pids)},
            )
            return False
        frozen = freezer is not None and _freeze(freezer, deadline)
        try:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        finally:
            if frozen and freezer is not None:
                # Killed tasks only die once thawed; never leave the cgroup frozen.
                with contextlib.suppress(OSError):
                    _write(freezer / "freezer.state", "THAWED")
        time.sleep(_KILL_POLL_S)


def _freeze(freezer: Path, deadline: float) -> bool:
    try:
        _write(freezer / "freezer.state", "FROZEN")
        while (freezer / "freezer.state").read_text().strip() != "FROZEN":
            if time.monotonic() > deadline:
                return True  # FREEZING: still worth killing, then thaw
            time.sleep(_KILL_POLL_S)
    except OSError:
        return False
    return True


def _rmdir_all(dirs: Iterable[Path], timeout_s: float = 2.0) -> None:
    # rmdir can briefly fail with EBUSY right after the last task exited; retry a little.
    for directory in dirs:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                directory.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError as exc:
                if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                    raise
                time.sleep(_KILL_POLL_S)


def _check_leaf(leaf: str) -> None:
    if not leaf.startswith(CGROUP_PREFIX) or "/" in leaf or leaf in (".", ".."):
        raise ValueError(f"job cgroup names must start with {CGROUP_PREFIX!r} and be one path segment")


# -- cgroup v1 -------------------------------------------------------------------------------------


class V1JobCgroup:
    """A job's cgroups on v1: one directory per controller (memory, pids, cpu, optional freezer)."""

    def __init__(self, dirs: Mapping[str, Path]) -> None:
        self.dirs = dict(dirs)

    @property
    def directories(self) -> tuple[Path, ...]:
        return tuple(self.dirs.values())

    @property
    def procs_files(self) -> tuple[Path, ...]:
        return tuple(d / "cgroup.procs" for d in self.dirs.values())

    def make(self) -> None:
        created: list[Path] = []
        for controller, directory in self.dirs.items():
            try:
                directory.mkdir()
            except OSError as exc:
                with contextlib.suppress(OSError):
                    _rmdir_all(created)
                raise SandboxUnavailable(
                    f"cannot create a job cgroup for the {controller} controller at {directory}: {exc}"
                ) from exc
            created.append(directory)

    def set_limits(self, limits: Limits) -> None:
        if limits.memory_bytes is not None:
            memory = self.dirs["memory"]
            _write(memory / "memory.limit_in_bytes", str(limits.memory_bytes))
            # With swap accounting, also cap memory+swap, or the job could swap past its limit.
            if (memory / "memory.memsw.limit_in_bytes").exists():
                _write(memory / "memory.memsw.limit_in_bytes", str(limits.memory_bytes))
        if limits.pids is not None:
            _write(self.dirs["pids"] / "pids.max", str(limits.pids))
        if limits.cpus is not None:
            cpu = self.dirs["cpu"]
            _write(cpu / "cpu.cfs_period_us", str(CFS_PERIOD_US))
            _write(cpu / "cpu.cfs_quota_us", str(round(limits.cpus * CFS_PERIOD_US)))

    def pids(self) -> set[int]:
        result: set[int] = set()
        for procs_file in self.procs_files:
            result |= _read_pids(procs_file)
        return result

    def kill_all(self, timeout_s: float = 5.0) -> bool:
        return _kill_loop(self.procs_files, timeout_s, freezer=self.dirs.get("freezer"))

    def counters(self) -> CgroupCounters:
        memory = self.dirs["memory"]
        oom_control = memory / "memory.oom_control"
        try:
            oom = parse_flat_keyed(oom_control.read_text())
        except FileNotFoundError:
            oom = {}
        # "oom_kill" exists since Linux 4.13; before that, failcnt is the best hint available.
        oom_kills = oom["oom_kill"] if "oom_kill" in oom else _read_int(memory / "memory.failcnt")
        return CgroupCounters(
            oom_kills=oom_kills,
            pids_max_hits=_read_counter(self.dirs["pids"] / "pids.events", "max"),
        )

    def remove(self) -> None:
        _rmdir_all(self.dirs.values())

    def record(self) -> dict[str, Any]:
        return {"version": 1, "dirs": {k: str(v) for k, v in self.dirs.items()}}


def _read_int(path: Path) -> int:
    try:
        return int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return 0


class V1Backend:
    """Job cgroups on cgroup v1, one hierarchy per controller."""

    name = "cgroup v1"

    def __init__(self, parents: Mapping[str, Path]) -> None:
        """``parents`` maps each controller (memory, pids, cpu, optionally freezer) to kiln's own
        cgroup directory in that hierarchy."""
        self.parents = dict(parents)

    def plan(self, leaf: str) -> V1JobCgroup:
        _check_leaf(leaf)
        return V1JobCgroup({controller: parent / leaf for controller, parent in self.parents.items()})


# -- cgroup v2 -------------------------------------------------------------------------------------


def enable_controllers(parent: Path) -> None:
    """Enable memory, pids and cpu for the children of ``parent`` (``cgroup.subtree_control``).

    Raises
    ------
    SandboxUnavailable
        When a controller is not delegated to us, or v2's "no internal processes" rule forbids
        it: kiln's own cgroup holds processes, so kiln must run in a delegated cgroup of its own
        whose processes live in a leaf (e.g. ``systemd-run --scope -p Delegate=yes``).
    """
    available = set((parent / "cgroup.controllers").read_text().split())
    missing = [c for c in REQUIRED_CONTROLLERS if c not in available]
    if missing:
        raise SandboxUnavailable(
            f"cgroup v2 controller(s) {', '.join(missing)} not delegated to kiln's cgroup {parent}"
        )
    enabled = set((parent / "cgroup.subtree_control").read_text().split())
    wanted = [c for c in REQUIRED_CONTROLLERS if c not in enabled]
    if not wanted:
        return
    try:
        _write(parent / "cgroup.subtree_control", " ".join(f"+{c}" for c in wanted))
    except OSError as exc:
        raise SandboxUnavailable(
            f"cannot enable cgroup v2 controllers {', '.join(wanted)} in {parent}: {exc} "
            "(kiln's cgroup must be delegated to it, with kiln's own processes in a leaf)"
        ) from exc


class V2JobCgroup:
    """A job's cgroup on v2: one directory with every controller."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @property
    def directories(self) -> tuple[Path, ...]:
        return (self.directory,)

    @property
    def procs_files(self) -> tuple[Path, ...]:
        return (self.directory / "cgroup.procs",)

    def make(self) -> None:
        enable_controllers(self.directory.parent)
        try:
            self.directory.mkdir()
        except OSError as exc:
            raise SandboxUnavailable(f"cannot create the job cgroup {self.directory}: {exc}") from exc

    def set_limits(self, limits: Limits) -> None:
        d = self.directory
        if limits.memory_bytes is not None:
            _write(d / "memory.max", str(limits.memory_bytes))
            if (d / "memory.swap.max").exists():
                _write(d / "memory.swap.max", "0")
        if limits.pids is not None:
            _write(d / "pids.max", str(limits.pids))
        if limits.cpus is not None:
            _write(d / "cpu.max", f"{round(limits.cpus * CFS_PERIOD_US)} {CFS_PERIOD_US}")

    def pids(self) -> set[int]:
        return _read_pids(self.directory / "cgroup.procs")

    def kill_all(self, timeout_s: float = 5.0) -> bool:
        # cgroup.kill (Linux 5.14+) kills the whole tree atomically, fork bombs included.
        kill_file = self.directory / "cgroup.kill"
        if kill_file.exists():
            with contextlib.suppress(FileNotFoundError):
                _write(kill_file, "1")
        return _kill_loop(self.procs_files, timeout_s)

    def counters(self) -> CgroupCounters:
        return CgroupCounters(
            oom_kills=_read_counter(self.directory / "memory.events", "oom_kill"),
            pids_max_hits=_read_counter(self.directory / "pids.events", "max"),
        )

    def remove(self) -> None:
        _rmdir_all([self.directory])

    def record(self) -> dict[str, Any]:
        return {"version": 2, "dir": str(self.directory)}


class V2Backend:
    """Job cgroups on the unified (v2) hierarchy."""

    name = "cgroup v2"

    def __init__(self, parent: Path) -> None:
        """``parent`` is kiln's own cgroup directory; it must delegate memory, pids and cpu."""
        self.parent = parent

    def plan(self, leaf: str) -> V2JobCgroup:
        _check_leaf(leaf)
        return V2JobCgroup(self.parent / leaf)


# -- detection -------------------------------------------------------------------------------------


def detect_backend(proc: Path = Path("/proc")) -> V1Backend | V2Backend:
    """Pick the backend for this machine from /proc/self/cgroup and /proc/self/mountinfo.

    v1 is used when memory, pids and cpu are all on v1 hierarchies (hybrid layout); v2 when they
    are all available on the unified hierarchy. The v1 freezer, when present, is used to kill.

    Raises
    ------
    SandboxUnavailable
        Naming the controllers that are on neither.
    """
    own = parse_proc_cgroup((proc / "self" / "cgroup").read_text())
    v1_mounts, v2_mount = parse_cgroup_mounts((proc / "self" / "mountinfo").read_text())

    if all(c in v1_mounts and c in own for c in REQUIRED_CONTROLLERS):
        parents = {c: cgroup_dir(v1_mounts[c], own[c]) for c in REQUIRED_CONTROLLERS}
        if "freezer" in v1_mounts and "freezer" in own:
            parents["freezer"] = cgroup_dir(v1_mounts["freezer"], own["freezer"])
        return V1Backend(parents)

    v2_available: set[str] = set()
    if v2_mount is not None and "" in own:
        parent = cgroup_dir(v2_mount, own[""])
        with contextlib.suppress(OSError):
            v2_available = set((parent / "cgroup.controllers").read_text().split())
        if all(c in v2_available for c in REQUIRED_CONTROLLERS):
            return V2Backend(parent)

    missing = [c for c in REQUIRED_CONTROLLERS if c not in v1_mounts and c not in v2_available]
    if missing:
        raise SandboxUnavailable(
            f"no {'/'.join(missing)} cgroup controller available to kiln (checked cgroup v1 and v2)"
        )
    raise SandboxUnavailable(
        "the memory, pids and cpu cgroup controllers are split between cgroup v1 and v2; "
        "kiln needs all three on the same version"
    )


def job_cgroup_from_record(record: Mapping[str, Any]) -> V1JobCgroup | V2JobCgroup:
    """Rebuild a job cgroup from :meth:`JobCgroup.record`, checking the names are kiln's."""
    if record.get("version") == 1:
        dirs = {str(k): Path(v) for k, v in dict(record["dirs"]).items()}
        for directory in dirs.values():
            _check_leaf(directory.name)
        return V1JobCgroup(dirs)
    if record.get("version") == 2:
        directory = Path(record["dir"])
        _check_leaf(directory.name)
        return V2JobCgroup(directory)
    raise ValueError(f"unknown cgroup record {record!r}")
