"""Extracting an artifact: modes, links and empty folders arrive; crafted archives are refused whole."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path

import pytest
import zstandard

from kiln.archive import UnsafeArchive
from kiln.artifacts.collect import collect
from kiln.artifacts.extract import extract_artifact
from kiln.artifacts.spool import ArtifactSpool
from kiln.artifacts.wire import ManifestEntry
from kiln.caches.files import UnsafePath
from kiln.errors import IntegrityError


def _build(ws: Path) -> None:
    (ws / "dist/bin").mkdir(parents=True)
    (ws / "dist/empty").mkdir()
    (ws / "dist/bin/tool").write_text("#!/bin/sh\necho hi\n")
    os.chmod(ws / "dist/bin/tool", 0o755)
    (ws / "dist/key").write_text("k")
    os.chmod(ws / "dist/key", 0o600)
    (ws / "dist/notes").write_text("n")
    os.chmod(ws / "dist/notes", 0o640)
    os.chmod(ws / "dist/empty", 0o700)
    os.symlink("bin/tool", ws / "dist/tool")


def _packed(tmp_path: Path):
    ws = tmp_path / "producer"
    _build(ws)
    found = collect(ws, ["dist"])
    spooled = ArtifactSpool(tmp_path / "spool").spool("r", "build", "dist", found.members, found.manifest)
    return found, spooled


def test_a_round_trip_keeps_modes_links_and_empty_folders(tmp_path: Path) -> None:
    found, spooled = _packed(tmp_path)
    ws = tmp_path / "consumer"
    (ws / "dist").mkdir(parents=True)
    (ws / "dist/notes").write_text("old")  # replaced
    (ws / "dist/other").write_text("kept")  # left alone
    total = extract_artifact(
        spooled.path, found.manifest, tmp_path / "staging", ws, max_unpacked_bytes=found.unpacked_bytes
    )
    assert total == found.unpacked_bytes
    modes = {
        p: stat.S_IMODE((ws / p).lstat().st_mode)
        for p in ("dist/bin/tool", "dist/key", "dist/notes", "dist/empty")
    }
    assert modes == {"dist/bin/tool": 0o755, "dist/key": 0o600, "dist/notes": 0o640, "dist/empty": 0o700}
    assert os.readlink(ws / "dist/tool") == "bin/tool" and (ws / "dist/tool").read_text().startswith("#!")
    assert (ws / "dist/notes").read_text() == "n" and (ws / "dist/other").read_text() == "kept"
    assert os.listdir(ws / "dist/empty") == [] and not (tmp_path / "staging").exists()


def test_a_link_in_the_workspace_is_replaced_not_written_through(tmp_path: Path) -> None:
    found, spooled = _packed(tmp_path)
    ws, outside = tmp_path / "consumer", tmp_path / "outside"
    ws.mkdir()
    outside.mkdir()
    os.symlink(outside, ws / "dist")  # the job's sources hold a link where the artifact has a folder
    with pytest.raises(UnsafePath):
        extract_artifact(spooled.path, found.manifest, tmp_path / "staging", ws, max_unpacked_bytes=10**6)
    assert os.listdir(outside) == []


def _archive(tmp_path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    path = tmp_path / "crafted.tar.zst"
    path.write_bytes(zstandard.ZstdCompressor().compress(raw.getvalue()))
    return path


def _info(
    name: str, kind: bytes = tarfile.REGTYPE, *, size: int = 0, mode: int = 0o644, link: str = ""
) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.mode, info.linkname = kind, size, mode, link
    return info


def _entry(name: str, kind: str = "file", *, size: int = 0, target: str | None = None) -> ManifestEntry:
    return ManifestEntry(path=name, kind=kind, mode=0o644, size_bytes=size, target=target)  # type: ignore[arg-type]


CRAFTED = [
    (
        "traversal",
        [(_info("../evil", size=1), b"x")],
        [_entry("../evil", size=1)],
        "not a plain relative path",
    ),
    (
        "absolute",
        [(_info("/etc/evil", size=1), b"x")],
        [_entry("/etc/evil", size=1)],
        "absolute path",
    ),
    (
        "absolute link",
        [
            (_info("dist", tarfile.DIRTYPE, mode=0o755), None),
            (_info("dist/l", tarfile.SYMTYPE, link="/etc/passwd"), None),
        ],
        [_entry("dist", "dir"), _entry("dist/l", "link", target="/etc/passwd")],
        "leaves the workspace",
    ),
    (
        "escaping link",
        [
            (_info("dist", tarfile.DIRTYPE, mode=0o755), None),
            (_info("dist/l", tarfile.SYMTYPE, link="../../x"), None),
        ],
        [_entry("dist", "dir"), _entry("dist/l", "link", target="../../x")],
        "leaves the workspace",
    ),
    (
        "link then write through it",
        [(_info("d", tarfile.SYMTYPE, link="."), None), (_info("d/f", size=1), b"x")],
        [_entry("d", "link", target="."), _entry("d/f", size=1)],
        "goes through the link 'd'",
    ),
    (
        "a chain of links leaves",
        [
            (_info("out", tarfile.DIRTYPE, mode=0o755), None),
            (_info("out/up2", tarfile.SYMTYPE, link="up/.."), None),
            (_info("out/up", tarfile.SYMTYPE, link=".."), None),
        ],
        [
            _entry("out", "dir"),
            _entry("out/up2", "link", target="up/.."),
            _entry("out/up", "link", target=".."),
        ],
        "link 'out/up2' -> 'up/..' leaves the workspace",
    ),
    (
        "hard link",
        [(_info("h", tarfile.LNKTYPE, link="etc/passwd"), None)],
        [_entry("h")],
        "not a file, folder",
    ),
    ("device", [(_info("dev", tarfile.CHRTYPE), None)], [_entry("dev")], "not a file, folder"),
    ("setuid", [(_info("suid", size=1, mode=0o4755), b"x")], [_entry("suid", size=1)], "setuid"),
    ("unlisted", [(_info("extra", size=1), b"x")], [], "not in the artifact's manifest"),
    (
        "kind differs",
        [(_info("x", tarfile.DIRTYPE, mode=0o755), None)],
        [_entry("x", "file")],
        "not the file the manifest lists",
    ),
    ("bomb", [(_info("big", size=2048), b"x" * 2048)], [_entry("big", size=2048)], "more than 1024 bytes"),
]


@pytest.mark.parametrize(
    ("members", "manifest", "message"), [c[1:] for c in CRAFTED], ids=[c[0] for c in CRAFTED]
)
def test_crafted_archives_are_refused_and_nothing_reaches_the_workspace(
    tmp_path: Path, members: list, manifest: list[ManifestEntry], message: str
) -> None:
    archive = _archive(tmp_path, members)
    ws = tmp_path / "ws"
    ws.mkdir()
    with pytest.raises((UnsafeArchive, IntegrityError), match=message):
        extract_artifact(archive, manifest, tmp_path / "staging", ws, max_unpacked_bytes=1024)
    assert os.listdir(ws) == []
    assert not (tmp_path / "staging").exists()
    assert not (tmp_path / "evil").exists()


def test_an_archive_that_differs_from_its_manifest_is_refused(tmp_path: Path) -> None:
    archive = _archive(tmp_path, [(_info("a", size=1), b"x")])
    ws = tmp_path / "ws"
    ws.mkdir()
    other_size = [_entry("a", size=2)]
    with pytest.raises(IntegrityError, match=r"differing \['a'\]"):
        extract_artifact(archive, other_size, tmp_path / "staging", ws, max_unpacked_bytes=10)
    missing = [_entry("a", size=1), _entry("b", size=1)]
    with pytest.raises(IntegrityError, match=r"missing \['b'\]"):
        extract_artifact(archive, missing, tmp_path / "staging", ws, max_unpacked_bytes=10)
    assert os.listdir(ws) == []


def test_a_corrupt_archive_is_an_integrity_error(tmp_path: Path) -> None:
    path = tmp_path / "junk.tar.zst"
    path.write_bytes(b"not zstd at all")
    ws = tmp_path / "ws"
    ws.mkdir()
    with pytest.raises(IntegrityError, match="corrupt"):
        extract_artifact(path, [], tmp_path / "staging", ws, max_unpacked_bytes=10)
