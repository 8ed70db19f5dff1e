"""The step's command line: overlay options and bubblewrap flags, without running anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from kiln.errors import SandboxUnavailable
from kiln.sandbox.launcher import (
    LAUNCHER_SCRIPT,
    MAX_LOWER_LAYERS,
    Tools,
    bwrap_argv,
    launcher_argv,
    overlay_options,
    validate_env,
)

TOOLS = Tools(unshare="/usr/bin/unshare", sh="/bin/sh", bwrap="/usr/bin/bwrap")


def make_bwrap(**overrides: object) -> list[str]:
    kwargs: dict[str, object] = {
        "merged": Path("/s/j/merged"),
        "ro_binds": (),
        "workspace": Path("/w/ws"),
        "env": {"PATH": "/bin"},
        "network": False,
        "hostname": "kiln",
        "cwd": "/workspace",
        "argv": ["make", "-j2"],
    }
    kwargs.update(overrides)
    return bwrap_argv("/usr/bin/bwrap", **kwargs)  # type: ignore[arg-type]


def pairs(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == flag]


# -- overlay ---------------------------------------------------------------------------------------


def test_overlay_options_keep_lower_order_top_first() -> None:
    options = overlay_options([Path("/l/top"), Path("/l/base")], Path("/s/upper"), Path("/s/work"))
    assert options == "lowerdir=/l/top:/l/base,upperdir=/s/upper,workdir=/s/work"


@pytest.mark.parametrize("bad", ["/l/a,b", "/l/a:b", "relative/dir", "/l/a\\b"])
def test_overlay_options_refuse_paths_overlayfs_cannot_take(bad: str) -> None:
    with pytest.raises(SandboxUnavailable, match="overlay path"):
        overlay_options([Path(bad)], Path("/s/upper"), Path("/s/work"))


def test_overlay_options_enforce_kernel_limits() -> None:
    with pytest.raises(SandboxUnavailable, match="at least one lower"):
        overlay_options([], Path("/u"), Path("/w"))
    with pytest.raises(SandboxUnavailable, match="at most 500"):
        overlay_options([Path(f"/l/{i}") for i in range(MAX_LOWER_LAYERS + 1)], Path("/u"), Path("/w"))
    long_paths = [Path("/" + "x" * 100 + f"/{i}") for i in range(50)]
    with pytest.raises(SandboxUnavailable, match="over the kernel's 4095"):
        overlay_options(long_paths, Path("/u"), Path("/w"))


# -- bwrap -----------------------------------------------------------------------------------------


def test_bwrap_isolates_by_default() -> None:
    argv = make_bwrap()
    assert argv[:4] == ["/usr/bin/bwrap", "--bind", "/s/j/merged", "/"]
    for flag in ("--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent"):
        assert flag in argv
    assert "--new-session" in argv and "--clearenv" in argv
    assert pairs(argv, "--cap-drop") == ["ALL"] and "--cap-add" not in argv
    # host-wide sysctls must not be writable by the step's uid 0
    assert argv.index("--proc") < argv.index("/proc/sys")
    assert pairs(argv, "--ro-bind") == ["/proc/sys"]
    assert "--share-net" not in argv
    assert pairs(argv, "--bind") == ["/s/j/merged", "/w/ws"]
    assert argv[argv.index("--bind", 3) + 2] == "/workspace"
    assert argv[argv.index("--tmpfs") - 2 : argv.index("--tmpfs") + 2] == [
        "--perms",
        "1777",
        "--tmpfs",
        "/tmp",
    ]
    assert pairs(argv, "--hostname") == ["kiln"] and pairs(argv, "--chdir") == ["/workspace"]
    assert argv[-3:] == ["--", "make", "-j2"]


def test_bwrap_network_is_opt_in() -> None:
    argv = make_bwrap(network=True)
    assert argv.index("--share-net") > argv.index("--unshare-all")  # later flag wins in bwrap


def test_bwrap_env_is_cleared_then_set_exactly() -> None:
    argv = make_bwrap(env={"B": "2", "A": "x y", "EMPTY": ""})
    clear = argv.index("--clearenv")
    setenv = [i for i, a in enumerate(argv) if a == "--setenv"]
    assert all(i > clear for i in setenv)
    assert [argv[i + 1 : i + 3] for i in setenv] == [["A", "x y"], ["B", "2"], ["EMPTY", ""]]


def test_bwrap_ro_binds_come_before_workspace_and_kernel_filesystems() -> None:
    argv = make_bwrap(ro_binds=((Path("/usr"), "/usr"), (Path("/opt/x"), "/opt/x")))
    assert pairs(argv, "--ro-bind") == ["/usr", "/opt/x", "/proc/sys"]
    assert argv.index("--ro-bind") < argv.index("/w/ws") < argv.index("--dev")


def test_bwrap_argument_after_double_dash_is_not_a_flag() -> None:
    argv = make_bwrap(argv=["--share-net"])
    assert argv[-2:] == ["--", "--share-net"]
    assert argv.index("--share-net") == len(argv) - 1


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"argv": []}, "needs a command"),
        ({"argv": ["a\0b"]}, "NUL"),
        ({"cwd": "relative"}, "absolute"),
        ({"env": {"A=B": "1"}}, "invalid environment"),
        ({"env": {"": "1"}}, "invalid environment"),
        ({"env": {"A": "nul\0"}}, "invalid environment"),
    ],
)
def test_bwrap_refuses_what_execve_cannot_carry(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_bwrap(**overrides)


def test_validate_env_accepts_ordinary_values() -> None:
    validate_env({"PATH": "/bin", "X": "a=b c", "EMPTY": ""})


# -- launcher --------------------------------------------------------------------------------------


def test_launcher_joins_cgroups_then_mounts_then_execs_bwrap() -> None:
    procs = [Path("/cg/memory/kiln-j/cgroup.procs"), Path("/cg/pids/kiln-j/cgroup.procs")]
    inner = make_bwrap()
    argv = launcher_argv(
        TOOLS, procs_files=procs, overlay_opts="lowerdir=/l", merged=Path("/s/m"), bwrap=inner
    )
    assert argv[:5] == ["/usr/bin/unshare", "--mount", "--propagation", "private", "--"]
    assert argv[5:9] == ["/bin/sh", "-c", LAUNCHER_SCRIPT, "kiln-launcher"]
    assert argv[9:] == ["2", *map(str, procs), "lowerdir=/l", "/s/m", *inner]


def test_launcher_script_reports_its_own_failures_apart_from_the_step() -> None:
    # errors before exec go to kiln's private pipe with exit 125; stderr joins stdout only for bwrap
    lines = LAUNCHER_SCRIPT.splitlines()
    assert lines[-2:] == ["exec 2>&1", 'exec "$@"']
    assert "exit 125" in LAUNCHER_SCRIPT
    assert LAUNCHER_SCRIPT.index("cgroup") < LAUNCHER_SCRIPT.index("mount -t overlay")
