"""Overlay upper → OCI layer → overlay lower: deterministic, faithful, and safe to unpack.

Real files with real overlayfs marks (whiteout devices, trusted.* xattrs): these need root.
"""

from __future__ import annotations

import io
import os
import stat
import tarfile
import time
from pathlib import Path

import pytest
import zstandard

from kiln.archive import UnsafeArchive
from kiln.errors import DigestMismatch
from kiln.images.capture import capture_layer, remove_noise
from kiln.images.oci import LAYER_TAR, LAYER_ZSTD, SOURCE_DATE_EPOCH
from kiln.images.unpack import unpack_layer

pytestmark = pytest.mark.sandbox


def _upper(root: Path) -> Path:
    """An upper as overlayfs leaves it: new files, a deletion, an opaque folder, a hard link."""
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/bin/tool").write_text("#!/bin/sh\necho tool\n")
    os.chmod(root / "usr/bin/tool", 0o4755)  # setuid stays: an image is a system
    os.link(root / "usr/bin/tool", root / "usr/bin/tool-again")
    os.symlink("/usr/bin/tool", root / "usr/bin/alias")
    os.mknod(root / "usr/bin/removed", stat.S_IFCHR, os.makedev(0, 0))  # a whiteout
    (root / "etc/fresh").mkdir(parents=True)
    (root / "etc/fresh/only.conf").write_text("x=1\n")
    os.setxattr(root / "etc/fresh", "trusted.overlay.opaque", b"y")
    os.setxattr(root / "etc", "trusted.overlay.origin", b"\x00\x01binary")
    os.chown(root / "etc/fresh/only.conf", 42, 43)
    (root / "var/log/apt").mkdir(parents=True)
    (root / "var/log/apt/history.log").write_text(f"Start-Date: {time.time()}\n")
    (root / "var/log/dpkg.log").write_text(f"{time.time()} install\n")
    return root


def _members(blob: Path) -> list[tarfile.TarInfo]:
    with blob.open("rb") as raw, zstandard.ZstdDecompressor().stream_reader(raw) as plain:
        data = plain.read()
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return tar.getmembers()


def test_overlay_marks_become_oci_entries_in_a_fixed_order(tmp_path: Path) -> None:
    upper = _upper(tmp_path / "upper")
    assert remove_noise(upper) == ["var/log/apt/history.log", "var/log/dpkg.log"]
    blob = capture_layer(upper, tmp_path / "layer.zst")
    members = _members(blob.path)
    names = [m.name for m in members]
    assert names == [
        "etc",
        "etc/fresh",
        "etc/fresh/.wh..wh..opq",
        "etc/fresh/only.conf",
        "usr",
        "usr/bin",
        "usr/bin/.wh.removed",
        "usr/bin/alias",
        "usr/bin/tool",
        "usr/bin/tool-again",
        "var",
        "var/log",
        "var/log/apt",
    ]
    by_name = {m.name: m for m in members}
    assert by_name["usr/bin/tool-again"].islnk() and by_name["usr/bin/tool-again"].linkname == "usr/bin/tool"
    assert by_name["usr/bin/tool"].mode == 0o4755
    assert (by_name["etc/fresh/only.conf"].uid, by_name["etc/fresh/only.conf"].gid) == (42, 43)
    assert all(m.uname == "" and m.gname == "" for m in members)
    assert all(m.mtime <= SOURCE_DATE_EPOCH for m in members)
    assert not any("overlay" in key for m in members for key in m.pax_headers)


def test_the_same_tree_captured_at_other_times_gives_the_same_diff_id(tmp_path: Path) -> None:
    trees = []
    for name in ("a", "b"):
        trees.append(_upper(tmp_path / name))
        remove_noise(trees[-1])  # the logs hold the time: the reason they are noise
        time.sleep(1.1)
    first = capture_layer(trees[0], tmp_path / "a.zst")
    second = capture_layer(trees[1], tmp_path / "b.zst")
    assert (first.diff_id, first.digest) == (second.diff_id, second.digest)


def test_a_layer_unpacks_into_an_overlay_lower_and_captures_back_to_itself(tmp_path: Path) -> None:
    upper = _upper(tmp_path / "upper")
    os.setxattr(
        upper / "usr/bin/tool", "security.capability", b"\x01\x00\x00\x02\x00\x20\x00\x00" + bytes(12)
    )
    blob = capture_layer(upper, tmp_path / "layer.zst")
    lower = tmp_path / "lower"
    lower.mkdir()
    with blob.path.open("rb") as source:
        assert unpack_layer(source, LAYER_ZSTD, lower, diff_id=blob.diff_id) == blob.diff_id
    whiteout = (lower / "usr/bin/removed").lstat()
    assert stat.S_ISCHR(whiteout.st_mode) and whiteout.st_rdev == 0
    assert os.getxattr(lower / "etc/fresh", "trusted.overlay.opaque") == b"y"
    assert os.getxattr(lower / "usr/bin/tool", "security.capability").startswith(b"\x01\x00\x00\x02")
    assert (lower / "usr/bin/tool").stat().st_ino == (lower / "usr/bin/tool-again").stat().st_ino
    assert again_diff_id(lower, tmp_path) == blob.diff_id


def again_diff_id(lower: Path, tmp_path: Path) -> str:
    return capture_layer(lower, tmp_path / "again.zst").diff_id


def _tar(entries: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in entries:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


def _entry(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, link, 0o644
    return info


@pytest.mark.parametrize(
    "entries",
    [
        [(_entry("../escape"), b"x")],
        [(_entry("/etc/passwd"), b"x")],
        [(_entry("lib", tarfile.SYMTYPE, str(Path("/tmp"))), None), (_entry("lib/planted"), b"x")],
        [(_entry("stolen", tarfile.LNKTYPE, "/etc/shadow"), None)],
    ],
    ids=["dotdot", "absolute", "through-a-symlink", "hardlink-outside"],
)
def test_an_untrusted_layer_cannot_write_outside_its_folder(tmp_path: Path, entries: list) -> None:
    lower = tmp_path / "lower"
    lower.mkdir()
    with pytest.raises(UnsafeArchive):
        unpack_layer(io.BytesIO(_tar(entries)), LAYER_TAR, lower)
    assert not Path("/tmp/planted").exists()


def test_a_layer_that_is_not_its_diff_id_is_refused(tmp_path: Path) -> None:
    lower = tmp_path / "lower"
    lower.mkdir()
    data = _tar([(_entry("file"), b"hello")])
    with pytest.raises(DigestMismatch):
        unpack_layer(io.BytesIO(data), LAYER_TAR, lower, diff_id="sha256:" + "0" * 64)


def test_an_untrusted_layer_cannot_set_overlay_xattrs(tmp_path: Path) -> None:
    info = _entry("dir", tarfile.DIRTYPE)
    info.mode = 0o755
    info.pax_headers = {"SCHILY.xattr.trusted.overlay.redirect": "/etc", "SCHILY.xattr.user.note": "kept"}
    lower = tmp_path / "lower"
    lower.mkdir()
    unpack_layer(io.BytesIO(_tar([(info, None)])), LAYER_TAR, lower)
    assert os.listxattr(lower / "dir") == ["user.note"]
