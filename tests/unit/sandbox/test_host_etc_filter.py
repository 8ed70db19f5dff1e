"""The host image's /etc: what is copied into the sandbox and what never is."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from kiln.errors import NotFound
from kiln.images import builtin_image
from kiln.images.builtin import copy_filtered, etc_excluded, host_digest

FILE, DIR, LINK = stat.S_IFREG, stat.S_IFDIR, stat.S_IFLNK


@pytest.mark.parametrize(
    "relative",
    [
        "shadow",
        "shadow-",
        "gshadow",
        "sudoers",
        "sudoers.d",
        "ssl/private",
        "ssh/ssh_host_ed25519_key",
        "apt/auth.conf.d",
        "containers/auth.json",
        "npmrc",
        "machine-id",
        "ssl/certs/server.key",
        "krb5.keytab",
        "app/credentials.json",
        "app/client_secret",
    ],
)
def test_secrets_are_excluded_whatever_their_mode(relative: str) -> None:
    assert etc_excluded(relative, FILE | 0o644)


@pytest.mark.parametrize(
    "relative",
    ["passwd", "group", "hosts", "resolv.conf", "ssl/certs/ca-certificates.crt", "ssh/ssh_host_rsa_key.pub"],
)
def test_ordinary_config_is_kept(relative: str) -> None:
    assert not etc_excluded(relative, FILE | 0o644)


def test_not_world_readable_is_excluded() -> None:
    assert etc_excluded("redis/redis.conf", FILE | 0o640)
    assert etc_excluded("polkit-1/rules.d", DIR | 0o700)
    assert etc_excluded("ssl/x", DIR | 0o711)  # searchable but not listable
    assert not etc_excluded("ssl/certs", DIR | 0o755)


def test_symlinks_are_kept_and_special_files_dropped() -> None:
    assert not etc_excluded("mtab", LINK | 0o777)
    assert etc_excluded("initctl", stat.S_IFIFO | 0o644)


def test_copy_keeps_what_the_filter_keeps(tmp_path: Path) -> None:
    etc, out = tmp_path / "etc", tmp_path / "out"
    (etc / "ssl" / "private").mkdir(parents=True)
    (etc / "ssl" / "certs").mkdir()
    (etc / "private-dir").mkdir(mode=0o700)
    (etc / "private-dir" / "inside").write_text("x")
    (etc / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    (etc / "shadow").write_text("root:$6$hash:::\n")
    (etc / "ssl" / "private" / "key.pem").write_text("KEY")
    (etc / "ssl" / "certs" / "ca.pem").write_text("CERT")
    (etc / "secret-ish.conf").write_text("x")
    os.chmod(etc / "private-dir", 0o700)
    (etc / "root-only").write_text("x")
    os.chmod(etc / "root-only", 0o600)
    os.symlink("/proc/self/mounts", etc / "mtab")
    os.utime(etc / "passwd", ns=(1_000_000_000, 1_000_000_000))
    out.mkdir()

    copy_filtered(etc, out)

    found = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    assert found == ["mtab", "passwd", "ssl", "ssl/certs", "ssl/certs/ca.pem"]
    assert os.readlink(out / "mtab") == "/proc/self/mounts"
    assert (out / "passwd").read_text() == "root:x:0:0::/root:/bin/sh\n"
    assert (out / "passwd").stat().st_mtime_ns == 1_000_000_000


def test_host_digest_changes_when_usr_local_changes(tmp_path: Path) -> None:
    status, usr_local = tmp_path / "status", tmp_path / "usr-local"
    status.write_text("Package: make\nVersion: 4.3-4.1\n")
    (usr_local / "bin").mkdir(parents=True)
    first = host_digest(status, usr_local)
    assert first.startswith("sha256:") and len(first) == 71
    assert host_digest(status, usr_local) == first
    (usr_local / "bin" / "tool").write_text("#!/bin/sh\n")
    assert host_digest(status, usr_local) != first


def test_host_digest_changes_when_packages_change(tmp_path: Path) -> None:
    status, usr_local = tmp_path / "status", tmp_path / "usr-local"
    usr_local.mkdir()
    status.write_text("Package: make\nVersion: 4.3-4.1\n")
    first = host_digest(status, usr_local)
    status.write_text("Package: make\nVersion: 4.3-4.2\n")  # dpkg rewrites: new mtime and content
    os.utime(status, ns=(2_000_000_000, 2_000_000_000))
    assert host_digest(status, usr_local) != first


def test_unknown_builtin_image_names_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match=r"'alpine'.*busybox, host"):
        builtin_image("alpine", tmp_path)
