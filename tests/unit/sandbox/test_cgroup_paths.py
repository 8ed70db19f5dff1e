"""Where job cgroups go and what is written there, on a fake cgroupfs in a temp dir."""

from __future__ import annotations

from pathlib import Path

import pytest

from kiln.errors import SandboxUnavailable
from kiln.sandbox import Limits
from kiln.sandbox.cgroups import (
    CgroupMount,
    V1Backend,
    V1JobCgroup,
    V2Backend,
    V2JobCgroup,
    cgroup_dir,
    detect_backend,
    job_cgroup_from_record,
    parse_cgroup_mounts,
    parse_proc_cgroup,
)

HYBRID_PROC_CGROUP = """\
9:name=systemd:/
8:pids:/
6:freezer:/
4:memory:/process_api/7b84ba49
2:cpu,cpuacct:/
0::/
"""


def hybrid_mountinfo(root: Path) -> str:
    return "\n".join(
        [
            f"31 23 0:28 / {root} rw,relatime - tmpfs tmpfs rw,mode=755",
            f"32 31 0:29 / {root}/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct",
            f"35 31 0:32 / {root}/memory rw,relatime - cgroup cgroup rw,memory",
            f"37 31 0:34 / {root}/freezer rw,relatime - cgroup cgroup rw,freezer",
            f"39 31 0:36 / {root}/pids rw,relatime - cgroup cgroup rw,pids",
            f"40 31 0:37 / {root}/systemd rw,relatime - cgroup cgroup rw,name=systemd",
            f"41 31 0:38 / {root}/unified rw,relatime - cgroup2 cgroup2 rw",
            "",
        ]
    )


def test_parse_proc_cgroup_splits_joined_controllers() -> None:
    own = parse_proc_cgroup(HYBRID_PROC_CGROUP)
    assert own["memory"] == "/process_api/7b84ba49"
    assert own["cpu"] == own["cpuacct"] == "/"
    assert own[""] == "/" and own["name=systemd"] == "/"


def test_parse_cgroup_mounts_maps_controllers_to_mount_points(tmp_path: Path) -> None:
    v1, v2 = parse_cgroup_mounts(hybrid_mountinfo(tmp_path))
    assert v1["cpu"] == v1["cpuacct"] == CgroupMount(tmp_path / "cpu,cpuacct", "/")
    assert v1["memory"].mount_point == tmp_path / "memory"
    assert "rw" not in v1
    assert v2 == CgroupMount(tmp_path / "unified", "/")


def test_parse_cgroup_mounts_unescapes_paths() -> None:
    v1, _ = parse_cgroup_mounts("1 2 0:3 / /sys/fs/my\\040cgroup rw - cgroup cgroup rw,pids\n")
    assert v1["pids"].mount_point == Path("/sys/fs/my cgroup")


def test_cgroup_dir_is_under_our_own_cgroup() -> None:
    mount = CgroupMount(Path("/sys/fs/cgroup/memory"), "/")
    assert cgroup_dir(mount, "/process_api/abc") == Path("/sys/fs/cgroup/memory/process_api/abc")
    assert cgroup_dir(mount, "/") == Path("/sys/fs/cgroup/memory")


def test_cgroup_dir_when_only_a_subtree_is_mounted() -> None:
    # e.g. in a container: the mount's root is our parent cgroup
    mount = CgroupMount(Path("/sys/fs/cgroup/pids"), "/docker/c1")
    assert cgroup_dir(mount, "/docker/c1") == Path("/sys/fs/cgroup/pids")
    assert cgroup_dir(mount, "/docker/c1/runner") == Path("/sys/fs/cgroup/pids/runner")
    with pytest.raises(SandboxUnavailable, match="not visible"):
        cgroup_dir(mount, "/docker/c10")


def fake_proc(tmp_path: Path, proc_cgroup: str, mountinfo: str) -> Path:
    proc = tmp_path / "proc"
    (proc / "self").mkdir(parents=True)
    (proc / "self" / "cgroup").write_text(proc_cgroup)
    (proc / "self" / "mountinfo").write_text(mountinfo)
    return proc


def test_detect_v1_on_the_hybrid_layout(tmp_path: Path) -> None:
    root = tmp_path / "cg"
    backend = detect_backend(fake_proc(tmp_path, HYBRID_PROC_CGROUP, hybrid_mountinfo(root)))
    assert isinstance(backend, V1Backend)
    assert backend.parents == {
        "memory": root / "memory" / "process_api" / "7b84ba49",
        "pids": root / "pids",
        "cpu": root / "cpu,cpuacct",
        "freezer": root / "freezer",
    }
    job = backend.plan("kiln-build-1234abcd")
    assert job.directories == (
        root / "memory" / "process_api" / "7b84ba49" / "kiln-build-1234abcd",
        root / "pids" / "kiln-build-1234abcd",
        root / "cpu,cpuacct" / "kiln-build-1234abcd",
        root / "freezer" / "kiln-build-1234abcd",
    )
    assert job.procs_files == tuple(d / "cgroup.procs" for d in job.directories)


def test_detect_v2_when_controllers_are_unified(tmp_path: Path) -> None:
    unified = tmp_path / "cg"
    (unified / "runner.scope").mkdir(parents=True)
    (unified / "runner.scope" / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    proc = fake_proc(tmp_path, "0::/runner.scope\n", f"1 2 0:3 / {unified} rw - cgroup2 cgroup2 rw\n")
    backend = detect_backend(proc)
    assert isinstance(backend, V2Backend)
    assert backend.plan("kiln-x").directories == (unified / "runner.scope" / "kiln-x",)


def test_detect_names_what_is_missing(tmp_path: Path) -> None:
    unified = tmp_path / "cg"
    unified.mkdir()
    (unified / "cgroup.controllers").write_text("hugetlb\n")
    proc = fake_proc(tmp_path, "0::/\n", f"1 2 0:3 / {unified} rw - cgroup2 cgroup2 rw\n")
    with pytest.raises(SandboxUnavailable, match="no memory/pids/cpu cgroup controller"):
        detect_backend(proc)


def test_job_names_must_be_kilns() -> None:
    backend = V1Backend({"pids": Path("/cg/pids")})
    with pytest.raises(ValueError):
        backend.plan("not-kiln")
    with pytest.raises(ValueError):
        backend.plan("kiln-../escape")
    with pytest.raises(ValueError):
        job_cgroup_from_record({"version": 1, "dirs": {"pids": "/sys/fs/cgroup/pids/precious"}})
    with pytest.raises(ValueError):
        job_cgroup_from_record({"version": 2, "dir": "/sys/fs/cgroup"})


def test_records_round_trip() -> None:
    v1 = V1JobCgroup({"memory": Path("/cg/memory/kiln-a"), "pids": Path("/cg/pids/kiln-a")})
    again = job_cgroup_from_record(v1.record())
    assert isinstance(again, V1JobCgroup) and again.dirs == v1.dirs
    v2 = V2JobCgroup(Path("/cg/runner/kiln-a"))
    again2 = job_cgroup_from_record(v2.record())
    assert isinstance(again2, V2JobCgroup) and again2.directory == v2.directory


def test_v1_limits_are_written_to_the_right_files(tmp_path: Path) -> None:
    dirs = {c: tmp_path / c / "kiln-j" for c in ("memory", "pids", "cpu")}
    for d in dirs.values():
        d.mkdir(parents=True)
    (dirs["memory"] / "memory.memsw.limit_in_bytes").touch()  # swap accounting present
    for name in ("memory.limit_in_bytes", "pids.max", "cpu.cfs_period_us", "cpu.cfs_quota_us"):
        (tmp_path / ("memory" if "memory" in name else name.split(".")[0]) / "kiln-j" / name).touch()
    V1JobCgroup(dirs).set_limits(Limits(memory_bytes=64 << 20, pids=64, cpus=1.5))
    assert (dirs["memory"] / "memory.limit_in_bytes").read_text() == str(64 << 20)
    assert (dirs["memory"] / "memory.memsw.limit_in_bytes").read_text() == str(64 << 20)
    assert (dirs["pids"] / "pids.max").read_text() == "64"
    assert (dirs["cpu"] / "cpu.cfs_period_us").read_text() == "100000"
    assert (dirs["cpu"] / "cpu.cfs_quota_us").read_text() == "150000"


def test_v2_limits_are_written_to_the_right_files(tmp_path: Path) -> None:
    for name in ("memory.max", "memory.swap.max", "pids.max", "cpu.max"):
        (tmp_path / name).touch()
    V2JobCgroup(tmp_path).set_limits(Limits(memory_bytes=1 << 30, pids=10, cpus=0.5))
    assert (tmp_path / "memory.max").read_text() == str(1 << 30)
    assert (tmp_path / "memory.swap.max").read_text() == "0"
    assert (tmp_path / "pids.max").read_text() == "10"
    assert (tmp_path / "cpu.max").read_text() == "50000 100000"


def test_unset_limits_write_nothing(tmp_path: Path) -> None:
    V1JobCgroup({"memory": tmp_path, "pids": tmp_path, "cpu": tmp_path}).set_limits(Limits())
    assert list(tmp_path.iterdir()) == []


def test_counters_compare_oom_and_pids_events(tmp_path: Path) -> None:
    memory, pids = tmp_path / "memory", tmp_path / "pids"
    memory.mkdir()
    pids.mkdir()
    (memory / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n")
    (pids / "pids.events").write_text("max 7\n")
    counters = V1JobCgroup({"memory": memory, "pids": pids}).counters()
    assert (counters.oom_kills, counters.pids_max_hits) == (2, 7)
