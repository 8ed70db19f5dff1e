"""Build steps' sandbox: real uids and a fixed set of capabilities; jobs keep none."""

from __future__ import annotations

from pathlib import Path

from kiln.sandbox.launcher import BUILD_CAPABILITIES, bwrap_argv


def _argv(**extra: object) -> list[str]:
    return bwrap_argv(
        "/usr/bin/bwrap",
        merged=Path("/s/merged"),
        ro_binds=(),
        workspace=Path("/s/ws"),
        env={"PATH": "/bin"},
        network=False,
        hostname="kiln",
        cwd="/workspace",
        argv=["true"],
        **extra,  # type: ignore[arg-type]
    )


def test_a_build_step_has_no_user_namespace_and_only_the_build_capabilities() -> None:
    argv = _argv(build=True)
    assert "--unshare-user" not in argv and "--unshare-all" not in argv
    assert {"--unshare-pid", "--unshare-ipc", "--unshare-net", "--unshare-uts", "--unshare-cgroup"} <= set(
        argv
    )
    added = [argv[i + 1] for i, arg in enumerate(argv) if arg == "--cap-add"]
    assert added == list(BUILD_CAPABILITIES)
    assert "CAP_SYS_ADMIN" not in added and "CAP_MKNOD" not in added
    assert argv.index("--cap-drop") < argv.index("--cap-add")


def test_a_job_step_still_drops_every_capability_in_its_own_user_namespace() -> None:
    argv = _argv()
    assert "--cap-add" not in argv
    assert {"--unshare-all", "--unshare-user", "--disable-userns"} <= set(argv)


def test_cache_mounts_are_bound_read_write_after_the_workspace() -> None:
    argv = _argv(binds=[(Path("/cache/pip"), "/root/.cache/pip")])
    at = argv.index("/cache/pip")
    assert argv[at - 1 : at + 2] == ["--bind", "/cache/pip", "/root/.cache/pip"]
    assert at > argv.index("/s/ws")
