"""Cache keys: what changes them, what never does, and how two documents differ."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from kiln.caches.files import glob_regex
from kiln.caches.keys import (
    EXCLUDED_FIELDS,
    KEY_FORMAT,
    KilnInputs,
    collect_files,
    differences,
    key_document,
    key_of,
    version_of,
)

KILN = KilnInputs(
    image="sha256:" + "a" * 64,
    platform="linux/x86_64",
    cache_type="build",
    archive="kiln.tar+zstd.v1",
    paths=("build",),
)


def _key(
    workspace: Path, *, kiln: KilnInputs = KILN, env: dict[str, str | None] | None = None, values=()
) -> str:
    patterns = ["src/**", "Makefile"]
    files, _ = collect_files(workspace, patterns)
    return key_of(
        key_document(kiln, patterns=patterns, files=files, env=env or {"CC": "gcc"}, values=list(values))
    )


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    (root / "src" / "sub").mkdir(parents=True)
    (root / "src" / "main.c").write_text("int main(void) { return 0; }\n")
    (root / "src" / "sub" / "util.h").write_text("#define X 1\n")
    (root / "Makefile").write_text("all:\n\tcc src/main.c\n")
    (root / "README").write_text("not an input\n")
    return root


def test_the_excluded_fields_are_documented() -> None:
    assert {"mtime", "owner/group", "mode bits other than exec", "host paths"} <= EXCLUDED_FIELDS.keys()


def test_mtime_atime_and_mode_bits_other_than_exec_leave_the_key_alone(workspace: Path) -> None:
    before = _key(workspace)
    os.utime(workspace / "src" / "main.c", (1, 2))
    os.chmod(workspace / "Makefile", 0o600)
    os.chmod(workspace / "src" / "sub" / "util.h", 0o664)
    assert _key(workspace) == before


def test_owner_leaves_the_key_alone(workspace: Path) -> None:
    before = _key(workspace)
    os.chown(workspace / "src" / "main.c", 12345, 23456)
    assert _key(workspace) == before


def test_the_host_path_of_the_workspace_leaves_the_key_alone(workspace: Path, tmp_path: Path) -> None:
    before = _key(workspace)
    moved = tmp_path / "elsewhere" / "checkout"
    moved.parent.mkdir()
    workspace.rename(moved)
    assert _key(moved) == before


@pytest.mark.parametrize(
    "change",
    [
        lambda ws: (ws / "src" / "main.c").write_text("int main(void) { return 1; }\n"),
        lambda ws: (ws / "src" / "sub" / "util.h").write_text("#define X 2\n"),
        lambda ws: (ws / "src" / "new.c").write_text(""),
        lambda ws: (ws / "src" / "sub" / "util.h").unlink(),
        lambda ws: os.chmod(ws / "Makefile", 0o755),
        lambda ws: (ws / "src" / "link").symlink_to("main.c"),
    ],
    ids=["source", "header", "added file", "removed file", "exec bit", "symlink"],
)
def test_a_content_change_of_an_input_changes_the_key(workspace: Path, change) -> None:
    before = _key(workspace)
    change(workspace)
    assert _key(workspace) != before


def test_files_that_no_pattern_matches_are_not_inputs(workspace: Path) -> None:
    before = _key(workspace)
    (workspace / "README").write_text("changed\n")
    assert _key(workspace) == before


@pytest.mark.parametrize(
    "kiln",
    [
        KilnInputs("sha256:" + "b" * 64, "linux/x86_64", "build", "kiln.tar+zstd.v1", ("build",)),
        KilnInputs(KILN.image, "linux/aarch64", "build", "kiln.tar+zstd.v1", ("build",)),
        KilnInputs(KILN.image, "linux/x86_64", "deps", "kiln.tar+zstd.v1", ("build",)),
        KilnInputs(KILN.image, "linux/x86_64", "build", "kiln.tar+zstd.v2", ("build",)),
        KilnInputs(KILN.image, "linux/x86_64", "build", "kiln.tar+zstd.v1", ("out",)),
    ],
    ids=["image", "platform", "type", "archive format", "path"],
)
def test_each_kiln_input_changes_the_key_and_the_version(workspace: Path, kiln: KilnInputs) -> None:
    assert _key(workspace, kiln=kiln) != _key(workspace)
    doc = key_document(kiln, patterns=[], files={}, env={}, values=[])
    assert version_of(doc) != version_of(key_document(KILN, patterns=[], files={}, env={}, values=[]))


def test_env_values_and_literals_change_the_key(workspace: Path) -> None:
    base = _key(workspace)
    assert _key(workspace, env={"CC": "clang"}) != base
    assert _key(workspace, env={"CC": None}) != _key(workspace, env={"CC": ""})
    assert _key(workspace, values=["v2"]) != base


def test_the_version_ignores_declared_inputs(workspace: Path) -> None:
    files, _ = collect_files(workspace, ["src/**"])
    a = key_document(KILN, patterns=["src/**"], files=files, env={"X": "1"}, values=["v1"])
    b = key_document(KILN, patterns=[], files={}, env={}, values=[])
    assert version_of(a) == version_of(b) and key_of(a) != key_of(b)


def test_the_format_tag_is_inside_the_hashed_document() -> None:
    doc = key_document(KILN, patterns=[], files={}, env={}, values=[])
    assert doc["format"] == KEY_FORMAT
    assert key_of({**doc, "format": "kiln.cache.key.v0"}) != key_of(doc)


def test_a_key_is_a_sha256_of_the_canonical_document() -> None:
    doc = key_document(KILN, patterns=[], files={}, env={"B": "2", "A": "1"}, values=[])
    reordered = key_document(KILN, patterns=[], files={}, env={"A": "1", "B": "2"}, values=[])
    assert key_of(doc) == key_of(reordered)
    assert key_of(doc).startswith("sha256:") and len(key_of(doc)) == 71


def test_collect_files_names_patterns_without_a_match(workspace: Path) -> None:
    files, unmatched = collect_files(workspace, ["src/**", "requirements*.txt", "src"])
    assert sorted(files) == ["src/main.c", "src/sub/util.h"]
    assert unmatched == ["requirements*.txt"]


def test_collect_files_does_not_follow_links_out_of_the_workspace(workspace: Path, tmp_path: Path) -> None:
    outside = tmp_path / "secret-dir"
    outside.mkdir()
    (outside / "passwd").write_text("root:x:0:0\n")
    (workspace / "src" / "escape").symlink_to(outside)
    files, _ = collect_files(workspace, ["src/**"])
    assert files["src/escape"] == f"link -> {outside}"
    assert not any("passwd" in path for path in files)


@pytest.mark.parametrize(
    ("pattern", "matches", "misses"),
    [
        ("src/**", ["src/a.c", "src/x/y/z.h"], ["src", "srcx/a.c", "a/src/b"]),
        ("**/*.h", ["a.h", "x/y/a.h"], ["a.c", "x/a.hh"]),
        ("requirements*.txt", ["requirements.txt", "requirements-dev.txt"], ["sub/requirements.txt"]),
        ("a/**/b", ["a/b", "a/x/b", "a/x/y/b"], ["a/xb", "b"]),
        ("[a-c]?.py", ["a1.py", "cz.py"], ["d1.py", "a12.py"]),
        ("[!a]x", ["bx"], ["ax"]),
    ],
)
def test_glob_semantics(pattern: str, matches: list[str], misses: list[str]) -> None:
    regex = glob_regex(pattern)
    assert all(regex.match(m) for m in matches), [m for m in matches if not regex.match(m)]
    assert not any(regex.match(m) for m in misses), [m for m in misses if regex.match(m)]


def test_differences_name_each_changed_input(workspace: Path) -> None:
    files, _ = collect_files(workspace, ["src/**"])
    ours = key_document(KILN, patterns=["src/**"], files=files, env={"CC": "gcc"}, values=["v1"])
    changed = dict(files)
    changed["src/main.c"] = "file 644 1 sha256:" + "0" * 64
    del changed["src/sub/util.h"]
    other_kiln = dataclasses.replace(KILN, image="sha256:" + "c" * 64)
    theirs = key_document(other_kiln, patterns=["src/**"], files=changed, env={"CC": "clang"}, values=["v1"])
    names = [d.name for d in differences(ours, theirs)]
    assert names == ["kiln.image", "env CC", "file src/main.c", "file src/sub/util.h"]
    removed = next(d for d in differences(ours, theirs) if d.name == "file src/sub/util.h")
    assert removed.theirs is None and removed.ours is not None
