import io
import os
import tarfile

import pytest
import zstandard

from kiln.archive import CLAMPED_MTIME, UnsafeArchive, pack, unpack
from kiln.errors import IntegrityError


def _tree(root):
    (root / "src").mkdir()
    (root / "src" / "main.c").write_text("int main(void) { return 0; }\n")
    (root / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (root / "run.sh").chmod(0o755)
    (root / "link").symlink_to("src/main.c")
    (root / "empty").mkdir()
    return ["src/main.c", "run.sh", "link", "empty"]


def _pack(root, files):
    out = io.BytesIO()
    info = pack(root, files, out)
    return out.getvalue(), info


def test_same_contents_give_the_same_bytes_whatever_mtime_or_umask(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    files = _tree(a)
    _tree(b)
    os.utime(b / "src" / "main.c", (1, 1))
    (b / "src" / "main.c").chmod(0o600)  # a different umask, same exec bit
    blob_a, info_a = _pack(a, files)
    blob_b, info_b = _pack(b, files)
    assert blob_a == blob_b
    assert info_a.digest == info_b.digest
    assert info_a.files == 3


def test_content_change_changes_the_digest(tmp_path):
    files = _tree(tmp_path)
    _, before = _pack(tmp_path, files)
    (tmp_path / "src" / "main.c").write_text("int main(void) { return 1; }\n")
    _, after = _pack(tmp_path, files)
    assert before.digest != after.digest


def test_round_trip_keeps_modes_links_and_empty_dirs(tmp_path):
    src, dest = tmp_path / "src", tmp_path / "dest"
    src.mkdir()
    dest.mkdir()
    files = _tree(src)
    blob, _ = _pack(src, files)
    unpack(io.BytesIO(blob), dest)
    assert (dest / "src" / "main.c").read_text() == "int main(void) { return 0; }\n"
    assert os.access(dest / "run.sh", os.X_OK)
    assert not os.access(dest / "src" / "main.c", os.X_OK)
    assert os.readlink(dest / "link") == "src/main.c"
    assert (dest / "empty").is_dir()
    assert int((dest / "run.sh").stat().st_mtime) == CLAMPED_MTIME


def _evil(member: tarfile.TarInfo, data: bytes = b"") -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        member.size = len(data)
        tar.addfile(member, io.BytesIO(data))
    return zstandard.ZstdCompressor().compress(raw.getvalue())


@pytest.mark.parametrize(
    "member",
    [
        tarfile.TarInfo("../escape"),
        tarfile.TarInfo("/etc/evil"),
        tarfile.TarInfo("a/../../escape"),
    ],
    ids=["dotdot", "absolute", "nested-dotdot"],
)
def test_paths_outside_the_destination_are_refused(tmp_path, member):
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(UnsafeArchive):
        unpack(io.BytesIO(_evil(member, b"x")), dest)
    assert not (tmp_path / "escape").exists()


def test_symlink_escape_is_refused(tmp_path):
    link = tarfile.TarInfo("out")
    link.type = tarfile.SYMTYPE
    link.linkname = "../../etc"
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(UnsafeArchive):
        unpack(io.BytesIO(_evil(link)), dest)


def test_device_nodes_are_refused(tmp_path):
    dev = tarfile.TarInfo("null")
    dev.type = tarfile.CHRTYPE
    dev.devmajor, dev.devminor = 1, 3
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(UnsafeArchive):
        unpack(io.BytesIO(_evil(dev)), dest)


def test_setuid_bit_is_refused(tmp_path):
    member = tarfile.TarInfo("suid")
    member.mode = 0o4755
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(UnsafeArchive, match="setuid"):
        unpack(io.BytesIO(_evil(member, b"#!/bin/sh\n")), dest)
    assert not (dest / "suid").exists()


def test_decompression_bomb_stops_at_the_limit(tmp_path):
    member = tarfile.TarInfo("big")
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(UnsafeArchive, match="more than"):
        unpack(io.BytesIO(_evil(member, b"\0" * 1_000_000)), dest, max_unpacked_bytes=1000)


def test_corrupt_stream_is_an_integrity_error(tmp_path):
    (tmp_path / "src").mkdir()
    blob, _ = _pack(tmp_path / "src", _tree(tmp_path / "src"))
    damaged = bytearray(blob)
    damaged[len(damaged) // 2] ^= 0xFF
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(IntegrityError):
        unpack(io.BytesIO(bytes(damaged)), dest)
