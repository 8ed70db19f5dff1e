"""The artifact spool: keyed by run, job, name and content, so a retried attempt finds its archive."""

from __future__ import annotations

import os
from pathlib import Path

from kiln.artifacts.collect import collect
from kiln.artifacts.spool import ArtifactSpool, content_digest


def _tree(root: Path, text: str = "v1") -> Path:
    (root / "dist").mkdir(parents=True, exist_ok=True)
    (root / "dist/app").write_text(text)
    return root


def test_the_same_files_reuse_the_spooled_archive(tmp_path: Path) -> None:
    ws = _tree(tmp_path / "ws")
    spool = ArtifactSpool(tmp_path / "spool")
    found = collect(ws, ["dist"])
    first = spool.spool("run1", "build", "dist", found.members, found.manifest)
    again = spool.spool("run1", "build", "dist", found.members, found.manifest)
    assert (first.reused, again.reused) == (False, True)
    assert (again.path, again.digest, again.size_bytes) == (first.path, first.digest, first.size_bytes)
    assert first.path.parent == spool.folder("run1", "build", "dist")
    assert first.path.name == content_digest(found.manifest).removeprefix("sha256:") + ".tar.zst"


def test_other_content_replaces_the_stale_archive(tmp_path: Path) -> None:
    ws = _tree(tmp_path / "ws")
    spool = ArtifactSpool(tmp_path / "spool")
    found = collect(ws, ["dist"])
    first = spool.spool("run1", "build", "dist", found.members, found.manifest)
    _tree(ws, "v2")
    changed = collect(ws, ["dist"])
    second = spool.spool("run1", "build", "dist", changed.members, changed.manifest)
    assert second.digest != first.digest and not second.reused
    assert sorted(p.name for p in second.path.parent.iterdir()) == sorted(
        [second.path.name, second.path.name.replace(".tar.zst", ".json")]
    )


def test_a_half_written_archive_is_packed_again(tmp_path: Path) -> None:
    ws = _tree(tmp_path / "ws")
    spool = ArtifactSpool(tmp_path / "spool")
    found = collect(ws, ["dist"])
    first = spool.spool("run1", "build", "dist", found.members, found.manifest)
    with first.path.open("r+b") as f:  # killed while packing: shorter than its record says
        f.truncate(first.size_bytes // 2)
    again = spool.spool("run1", "build", "dist", found.members, found.manifest)
    assert not again.reused and again.digest == first.digest and again.path.stat().st_size == first.size_bytes


def test_discard_and_sweep(tmp_path: Path) -> None:
    ws = _tree(tmp_path / "ws")
    spool = ArtifactSpool(tmp_path / "spool")
    found = collect(ws, ["dist"])
    spool.spool("run1", "build", "dist", found.members, found.manifest)
    spool.spool("run2", "build", "dist", found.members, found.manifest)
    spool.discard("run1", "build", "dist")
    assert not spool.folder("run1", "build", "dist").exists()
    old = spool.folder("run2", "build", "dist")
    os.utime(old, (1, 1))
    assert spool.sweep() == [old] and not old.exists()
