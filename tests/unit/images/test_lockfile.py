"""kiln.lock: entries by base text and apt step, stale when the step asks for other packages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kiln.errors import UsageError
from kiln.images.lockfile import Lock, lock_path


def test_a_lock_round_trips_through_its_file_sorted_and_stable(tmp_path: Path) -> None:
    lock = Lock()
    lock.set_base("docker://127.0.0.1:5000/base:1", {"digest": "sha256:" + "b" * 64}, "resolved")
    lock.set_apt(
        "tools", 0, {"packages": ["make", "gcc"], "versions": {"gcc": "12", "make": "4.3"}}, "resolved"
    )
    path = tmp_path / "kiln.lock"
    lock.save(path)
    text = path.read_text()
    assert json.loads(text)["kiln_lock"] == 1 and text.endswith("}\n")
    loaded = Lock.load(path)
    assert loaded.to_json() == lock.to_json()
    loaded.save(path)
    assert path.read_text() == text
    assert lock.changes == ["docker://127.0.0.1:5000/base:1: resolved", "tools/0 (apt): resolved"]


def test_an_apt_entry_for_other_packages_is_stale() -> None:
    lock = Lock(apt={"tools/0": {"packages": ["gcc", "make"], "versions": {}}})
    assert lock.apt_entry("tools", 0, ["make", "gcc"]) is not None
    assert lock.apt_entry("tools", 0, ["gcc"]) is None
    assert lock.apt_entry("tools", 1, ["gcc", "make"]) is None


def test_setting_the_same_entry_again_is_no_change() -> None:
    lock = Lock(bases={"debian:bookworm": {"inrelease": "sha256:1"}})
    lock.set_base("debian:bookworm", {"inrelease": "sha256:1"}, "resolved")
    assert lock.changes == []


def test_a_missing_lock_is_empty_and_a_bad_one_is_a_usage_error(tmp_path: Path) -> None:
    assert Lock.load(tmp_path / "kiln.lock").to_json() == {"kiln_lock": 1, "bases": {}, "apt": {}}
    (tmp_path / "kiln.lock").write_text('{"bases": {}}')
    with pytest.raises(UsageError, match="is not a kiln lock file"):
        Lock.load(tmp_path / "kiln.lock")


def test_the_lock_lives_beside_the_workflow(tmp_path: Path) -> None:
    assert lock_path(tmp_path / "ci" / "kiln.yml") == tmp_path.resolve() / "ci" / "kiln.lock"


def test_a_plan_carries_only_the_entries_its_images_use() -> None:
    lock = Lock(
        bases={"debian:bookworm": {}, "debian:trixie": {}},
        apt={"tools/0": {}, "other/0": {}, "toolsx/1": {}},
    )
    subset = lock.subset(["debian:bookworm"], ["tools"])
    assert (list(subset.bases), list(subset.apt)) == (["debian:bookworm"], ["tools/0"])


def test_pruning_drops_the_entries_nothing_uses_and_says_so() -> None:
    lock = Lock(
        bases={"docker://127.0.0.1:5000/base:1": {}, "docker://127.0.0.1:5000/base:2": {}},
        apt={"tools/0": {}, "tools/3": {}},
    )
    removed = lock.prune({"docker://127.0.0.1:5000/base:2"}, {"tools/0"})
    assert removed == ["docker://127.0.0.1:5000/base:1", "tools/3"]
    assert (list(lock.bases), list(lock.apt)) == (["docker://127.0.0.1:5000/base:2"], ["tools/0"])
    assert lock.changes == [
        "docker://127.0.0.1:5000/base:1: removed (no image uses it)",
        "tools/3 (apt): removed (no apt step there)",
    ]
