"""Cache archives: deterministic packing with a manifest, and a restore that refuses every escape."""

from __future__ import annotations

import io
import os
import shutil
import stat
import tarfile
from pathlib import Path

import pytest
import zstandard

from kiln.archive import UnsafeArchive
from kiln.caches.archive import MANIFEST_MEMBER, CachePath, inspect_archive, pack_cache, restore_cache
from kiln.caches.files import UnsafePath
from kiln.caches.manifest import CacheRoot, Manifest, scan_roots
from kiln.caches.secretscan import SecretScanner
from kiln.errors import IntegrityError


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path, Path]:
    workspace, upper, outside = tmp_path / "ws", tmp_path / "upper", tmp_path / "outside"
    for d in (workspace, upper, outside):
        d.mkdir()
    return workspace, upper, outside


def _roots(workspace: Path, upper: Path) -> list[CacheRoot]:
    return [
        CacheRoot("build", "workspace/build", workspace, "build"),
        CacheRoot("~/.cache/pip", "root/.cache/pip", upper, "root/.cache/pip"),
    ]


def _fill(workspace: Path, upper: Path) -> None:
    (workspace / "build" / "obj").mkdir(parents=True)
    (workspace / "build" / "obj" / "a.o").write_bytes(b"\x7fELF" + bytes(range(256)) * 10)
    tool = workspace / "build" / "tool"
    tool.write_text("#!/bin/sh\necho hi\n")
    tool.chmod(0o755)
    (workspace / "build" / "latest").symlink_to("obj/a.o")
    (workspace / "build" / "empty").mkdir()
    pip = upper / "root" / ".cache" / "pip" / "wheels"
    pip.mkdir(parents=True)
    (pip / "x-1.0-py3-none-any.whl").write_bytes(b"PK" + b"w" * 5000)


def _pack(roots: list[CacheRoot], dest: Path) -> Manifest:
    scan = scan_roots(roots, SecretScanner({}))
    with dest.open("wb") as out:
        pack_cache(scan, out)
    return scan.manifest


def test_a_cache_round_trips_exactly(dirs, tmp_path: Path) -> None:
    workspace, upper, _ = dirs
    _fill(workspace, upper)
    roots = _roots(workspace, upper)
    manifest = _pack(roots, tmp_path / "c.tar.zst")
    shutil.rmtree(workspace / "build")
    shutil.rmtree(upper / "root")
    with (tmp_path / "c.tar.zst").open("rb") as blob:
        result = restore_cache(blob, roots, tmp_path / "staging", max_unpacked_bytes=10**7)
    assert result.manifest.entries == manifest.entries
    assert scan_roots(roots, SecretScanner({})).manifest.entries == manifest.entries
    assert os.readlink(workspace / "build" / "latest") == "obj/a.o"
    assert os.stat(workspace / "build" / "tool").st_mode & 0o111
    assert not (tmp_path / "staging").exists() or not any((tmp_path / "staging").rglob("*.o"))


def test_restore_merges_into_what_is_there(dirs, tmp_path: Path) -> None:
    workspace, upper, _ = dirs
    _fill(workspace, upper)
    roots = _roots(workspace, upper)
    _pack(roots, tmp_path / "c.tar.zst")
    (workspace / "build" / "obj" / "a.o").write_text("stale")
    (workspace / "build" / "kept.txt").write_text("mine")
    with (tmp_path / "c.tar.zst").open("rb") as blob:
        restore_cache(blob, roots, tmp_path / "staging", max_unpacked_bytes=10**7)
    assert (workspace / "build" / "obj" / "a.o").read_bytes().startswith(b"\x7fELF")
    assert (workspace / "build" / "kept.txt").read_text() == "mine"


def test_the_same_content_packs_to_the_same_bytes_whatever_the_mtimes(dirs, tmp_path: Path) -> None:
    workspace, upper, _ = dirs
    _fill(workspace, upper)
    roots = _roots(workspace, upper)
    _pack(roots, tmp_path / "one.tar.zst")
    for path in (workspace / "build").rglob("*"):
        os.utime(path, (12345, 67890), follow_symlinks=False)
    (workspace / "build" / "obj" / "a.o").chmod(0o600)  # not the exec bit: normalised
    _pack(roots, tmp_path / "two.tar.zst")
    assert (tmp_path / "one.tar.zst").read_bytes() == (tmp_path / "two.tar.zst").read_bytes()


def test_the_manifest_is_the_last_member_and_describes_every_file(dirs, tmp_path: Path) -> None:
    workspace, upper, _ = dirs
    _fill(workspace, upper)
    manifest = _pack(_roots(workspace, upper), tmp_path / "c.tar.zst")
    with (
        (tmp_path / "c.tar.zst").open("rb") as raw,
        zstandard.ZstdDecompressor().stream_reader(raw) as z,
        tarfile.open(fileobj=z, mode="r|") as tar,
    ):
        names = [(m.name, tar.extractfile(m).read() if m.name == MANIFEST_MEMBER else None) for m in tar]
    assert names[-1][0] == MANIFEST_MEMBER
    assert Manifest.from_json(names[-1][1]).entries == manifest.entries
    by_path = {e.path: e for e in manifest.entries}
    assert by_path["workspace/build/tool"].mode == 0o755
    assert by_path["workspace/build/latest"].target == "obj/a.o"
    assert by_path["workspace/build/obj/a.o"].sha256.startswith("sha256:")


# -- hostile archives ------------------------------------------------------------------------------


def _hostile(*members: tuple[tarfile.TarInfo, bytes | None]) -> io.BytesIO:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return io.BytesIO(zstandard.ZstdCompressor().compress(raw.getvalue()))


def _file(name: str, data: bytes = b"x", mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), mode
    return info, data


def _special(name: str, kind: bytes, linkname: str = "") -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, linkname, 0o644
    if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
        info.devmajor, info.devminor = 1, 3
    return info, None


HOSTILE = {
    "path traversal": [_file("workspace/build/../../escaped")],
    "leading traversal": [_file("../escaped")],
    "absolute path": [_file("/tmp/kiln-cache-test-escaped")],
    "outside the cache paths": [_file("workspace/src/main.c", b"int evil;")],
    "absolute symlink": [_special("workspace/build/link", tarfile.SYMTYPE, "/etc/passwd")],
    "symlink escaping": [_special("workspace/build/link", tarfile.SYMTYPE, "../../../outside")],
    "symlink to the sources": [_special("workspace/build/link", tarfile.SYMTYPE, "../src/main.c")],
    "symlink then write through it": [
        _special("workspace/build/d", tarfile.SYMTYPE, "../.."),
        _file("workspace/build/d/escaped"),
    ],
    "hardlink escaping": [_special("workspace/build/h", tarfile.LNKTYPE, "/etc/passwd")],
    "hardlink inside": [
        _file("workspace/build/a"),
        _special("workspace/build/h", tarfile.LNKTYPE, "workspace/build/a"),
    ],
    "link whose target only resolves outside": [
        _special("workspace/build/s", tarfile.SYMTYPE, "."),
        _special("workspace/build/t", tarfile.SYMTYPE, "s/x/../.."),
    ],
    "writing through a link inside the cache": [
        _special("workspace/build/d", tarfile.SYMTYPE, "sub"),
        _file("workspace/build/d/f"),
    ],
    "an entry twice": [_file("workspace/build/a", b"one"), _file("workspace/build/a", b"two")],
    "character device": [_special("workspace/build/null", tarfile.CHRTYPE)],
    "block device": [_special("workspace/build/disk", tarfile.BLKTYPE)],
    "fifo": [_special("workspace/build/pipe", tarfile.FIFOTYPE)],
    "setuid": [_file("workspace/build/su", b"#!/bin/sh\n", mode=0o4755)],
    "setgid": [_file("workspace/build/sg", b"#!/bin/sh\n", mode=0o2755)],
}


@pytest.mark.parametrize("members", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_archives_are_refused_and_write_nothing_outside(dirs, tmp_path: Path, members) -> None:
    workspace, upper, outside = dirs
    (workspace / "src").mkdir()
    (workspace / "src" / "main.c").write_text("int main;")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    with pytest.raises(UnsafeArchive):
        restore_cache(
            _hostile(*members), _roots(workspace, upper), tmp_path / "staging", max_unpacked_bytes=10**6
        )
    after = sorted(p.name for p in tmp_path.rglob("*") if "staging" not in p.parts)
    assert after == [name for name in before]
    assert (workspace / "src" / "main.c").read_text() == "int main;"
    assert not (workspace / "build").exists() and not (upper / "root").exists()
    assert not Path("/tmp/kiln-cache-test-escaped").exists()
    assert list(outside.iterdir()) == []


@pytest.mark.parametrize("members", HOSTILE.values(), ids=HOSTILE.keys())
def test_the_server_side_inspection_refuses_the_same_archives(members) -> None:
    paths = [CachePath("build", "workspace/build"), CachePath("~/.cache/pip", "root/.cache/pip")]
    with pytest.raises(UnsafeArchive):
        inspect_archive(_hostile(*members), paths, max_unpacked_bytes=10**6)


def test_a_decompression_bomb_stops_at_the_limit(dirs, tmp_path: Path) -> None:
    workspace, upper, _ = dirs
    bomb = _hostile(_file("workspace/build/zeros", bytes(8 * 1024 * 1024)))
    assert len(bomb.getvalue()) < 4096  # tiny on the wire
    with pytest.raises(UnsafeArchive, match="more than 1048576 bytes"):
        restore_cache(bomb, _roots(workspace, upper), tmp_path / "staging", max_unpacked_bytes=1 << 20)
    assert not (workspace / "build").exists()
    staged = sum(p.stat().st_size for p in (tmp_path / "staging").rglob("*") if p.is_file())
    assert staged <= 1 << 20


def test_a_destination_reached_through_a_link_is_refused(dirs, tmp_path: Path) -> None:
    workspace, upper, outside = dirs
    _fill(workspace, upper)
    roots = _roots(workspace, upper)
    _pack(roots, tmp_path / "c.tar.zst")
    shutil.rmtree(workspace / "build")
    (workspace / "build").symlink_to(outside)  # the job's sources placed a link where the cache goes
    with (tmp_path / "c.tar.zst").open("rb") as blob, pytest.raises(UnsafePath):
        restore_cache(blob, roots, tmp_path / "staging", max_unpacked_bytes=10**7)
    assert list(outside.iterdir()) == []


def test_saving_through_a_link_packs_nothing_from_outside(dirs, tmp_path: Path) -> None:
    workspace, upper, outside = dirs
    (outside / "host-secret").write_text("do not pack me")
    (workspace / "build").symlink_to(outside)
    scan = scan_roots(_roots(workspace, upper), SecretScanner({}))
    assert scan.unsafe == ["/workspace/build is a symbolic link (cache path build)"]
    assert not any("host-secret" in e.path for e in scan.manifest.entries)


def test_an_archive_that_disagrees_with_its_manifest_is_corrupt(dirs, tmp_path: Path) -> None:
    workspace, upper, _ = dirs
    fake = Manifest([]).to_json()
    blob = _hostile(_file("workspace/build/a", b"data"), _file(MANIFEST_MEMBER, fake))
    with pytest.raises(IntegrityError, match="does not match its manifest"):
        restore_cache(blob, _roots(workspace, upper), tmp_path / "staging", max_unpacked_bytes=10**6)
    assert not (workspace / "build").exists()


def test_garbage_is_corrupt_not_a_crash(dirs, tmp_path: Path) -> None:
    workspace, upper, _ = dirs
    with pytest.raises(IntegrityError):
        restore_cache(
            io.BytesIO(b"not zstd at all"), _roots(workspace, upper), tmp_path / "s", max_unpacked_bytes=10
        )


def test_special_files_in_a_cache_path_are_not_saved(dirs) -> None:
    workspace, upper, _ = dirs
    (workspace / "build").mkdir()
    os.mkfifo(workspace / "build" / "pipe")
    (workspace / "build" / "ok").write_text("1")
    scan = scan_roots(_roots(workspace, upper), SecretScanner({}))
    assert [e.path for e in scan.manifest.entries] == ["workspace/build", "workspace/build/ok"]
    assert stat.S_ISFIFO(os.lstat(workspace / "build" / "pipe").st_mode)
