"""Which workspace files an artifact takes: globs, whole folders, excludes, links never followed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kiln.artifacts.collect import collect


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    for name in ("dist/app", "dist/lib/a.so", "dist/lib/b.tmp", "src/main.c", "README", "logs/x.log"):
        (ws / name).parent.mkdir(parents=True, exist_ok=True)
        (ws / name).write_text(name)
    (ws / "dist/empty").mkdir()
    os.chmod(ws / "dist/app", 0o750)
    os.symlink("lib/a.so", ws / "dist/current")
    return ws


def _paths(found) -> list[str]:
    return [e.path for e in found.manifest]


def test_a_folder_is_taken_whole_with_empty_folders_and_links(workspace: Path) -> None:
    found = collect(workspace, ["dist"])
    assert _paths(found) == [
        "dist",
        "dist/app",
        "dist/current",
        "dist/empty",
        "dist/lib",
        "dist/lib/a.so",
        "dist/lib/b.tmp",
    ]
    assert _paths(collect(workspace, ["dist/**"])) == _paths(found)
    app = next(e for e in found.manifest if e.path == "dist/app")
    assert (app.kind, app.mode, app.size_bytes) == ("file", 0o750, len("dist/app"))
    assert app.sha256 is not None and app.sha256.startswith("sha256:")
    link = next(e for e in found.manifest if e.path == "dist/current")
    assert (link.kind, link.target) == ("link", "lib/a.so")
    assert (found.files, found.unpacked_bytes) == (
        4,  # three files and a link
        sum(len(n) for n in ("dist/app", "dist/lib/a.so", "dist/lib/b.tmp")),
    )


def test_excludes_drop_files_and_folders(workspace: Path) -> None:
    assert "dist/lib/b.tmp" not in _paths(collect(workspace, ["dist"], ["**/*.tmp"]))
    assert _paths(collect(workspace, ["dist"], ["dist/lib"])) == [
        "dist",
        "dist/app",
        "dist/current",
        "dist/empty",
    ]


def test_a_file_pattern_brings_its_parents(workspace: Path) -> None:
    assert _paths(collect(workspace, ["**/*.so"])) == ["dist", "dist/lib", "dist/lib/a.so"]
    assert _paths(collect(workspace, ["*.c"])) == []  # `*` stays in the top folder


def test_nothing_matched_is_empty(workspace: Path) -> None:
    found = collect(workspace, ["out/**"])
    assert (found.members, found.manifest, found.files) == ([], [], 0)


def test_a_linked_folder_is_not_followed(workspace: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("s")
    os.symlink(outside, workspace / "dist/escape")
    os.symlink("../../src", workspace / "dist/lib/up")
    found = collect(workspace, ["dist"])
    assert "dist/escape/secret" not in _paths(found)
    assert found.escaping_links == [f"dist/escape -> {outside}"]  # absolute: it cannot travel
    assert "dist/lib/up" in _paths(found)  # ../../src stays inside the workspace


def test_a_chain_of_links_out_of_the_workspace_is_caught(workspace: Path) -> None:
    os.symlink("..", workspace / "dist/up")  # the workspace itself: fine
    os.symlink("up/..", workspace / "dist/up2")  # looks like dist/, is the workspace's parent
    assert collect(workspace, ["dist"]).escaping_links == ["dist/up2 -> up/.."]
