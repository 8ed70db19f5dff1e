"""Build mode: what a build step may do (real owners, setuid bits) and what it cannot gain.

A build step runs as real root with :data:`~kiln.sandbox.launcher.BUILD_CAPABILITIES`; bubblewrap's
``no_new_privs`` keeps it from gaining more through file capabilities, and the runner's image cache,
where its layers land on the host, is root's alone.
"""

from __future__ import annotations

import os
import shutil
import stat
import struct
from pathlib import Path

import pytest
from tests.integration.images.conftest import Builds

from kiln.images.builtin import busybox_image
from kiln.sandbox import JobSandbox, Limits

pytestmark = pytest.mark.sandbox

# CHOWN 0, DAC_OVERRIDE 1, FOWNER 3, FSETID 4, KILL 5, SETGID 6, SETUID 7, SETPCAP 8,
# NET_BIND_SERVICE 10, SYS_CHROOT 18, AUDIT_WRITE 29, SETFCAP 31
BUILD_CAPS_MASK = 0xA00405FB
CAP_DAC_READ_SEARCH, CAP_SYS_ADMIN = 2, 21

OWNERS = """
name: demo
images:
  owners:
    from: busybox
    steps:
      - run: |
          mkdir -p /srv/cache && chown 42:43 /srv/cache
          cp /bin/busybox /srv/tool && chmod 4755 /srv/tool
jobs:
  a: {image: owners, steps: [{run: x}]}
"""


def test_a_layer_keeps_real_owners_and_setuid_bits_and_the_cache_is_roots_alone(builds: Builds) -> None:
    built = builds.build(OWNERS, "owners")
    top = built.rootfs.layers[0]
    assert (os.lstat(top / "srv/cache").st_uid, os.lstat(top / "srv/cache").st_gid) == (42, 43)
    assert stat.S_IMODE(os.lstat(top / "srv/tool").st_mode) == 0o4755
    images = builds.state / "images"
    assert stat.S_IMODE(images.stat().st_mode) == 0o700


def _status(text: str) -> dict[str, str]:
    return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)


def test_a_build_step_gains_no_capability_from_a_file_capability(tmp_path: Path) -> None:
    rootfs = busybox_image(tmp_path / "images")
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    tool = workspace / "busybox"
    shutil.copy(rootfs.layers[0] / "bin/busybox", tool)
    caps = (1 << CAP_SYS_ADMIN) | (1 << CAP_DAC_READ_SEARCH)
    # vfs_cap_data v2, effective: what `setcap cap_sys_admin,cap_dac_read_search+ep` writes.
    os.setxattr(tool, "security.capability", struct.pack("<5I", 0x02000001, caps, 0, 0, 0))
    output: list[bytes] = []
    with JobSandbox(
        rootfs, workspace, state_dir=tmp_path / "state", name="fcap", limits=Limits(), build=True
    ) as box:
        outcome = box.run(
            [
                "/workspace/busybox",
                "sh",
                "-c",
                "cat /proc/self/status; mount -t tmpfs none /mnt && echo MOUNTED",
            ],
            env={"PATH": "/bin"},
            network=False,
            timeout_s=30,
            output=output.append,
        )
    text = b"".join(output).decode()
    status = _status(text)
    assert status["NoNewPrivs"].strip() == "1"
    assert int(status["CapEff"], 16) == BUILD_CAPS_MASK
    assert "MOUNTED" not in text and not outcome.ok
