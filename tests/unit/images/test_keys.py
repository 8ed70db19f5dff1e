"""Layer keys: every input that can change a layer is in the key; nothing else is."""

from __future__ import annotations

import os
from pathlib import Path

from kiln.images.keys import EXCLUDED_FIELDS, content_facts, copy_facts, digest_facts, key_of, layer_document


def _tree(root: Path) -> Path:
    (root / "tools/bin").mkdir(parents=True)
    (root / "tools/bin/run").write_text("#!/bin/sh\n")
    os.chmod(root / "tools/bin/run", 0o755)
    (root / "tools/README").write_text("hi\n")
    os.symlink("bin/run", root / "tools/link")
    return root


def _copy_key(root: Path) -> str:
    facts = copy_facts(root, "tools")
    assert facts is not None
    return key_of(layer_document(parent=None, step={"kind": "copy"}, content=digest_facts(facts)))


def test_mtime_owner_and_umask_bits_leave_the_key_alone(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    before = _copy_key(root)
    os.utime(root / "tools/README", (5, 5))
    os.chmod(root / "tools/README", 0o664)
    os.chown(root / "tools/README", 1000, 1000)
    assert _copy_key(root) == before
    assert {"mtime, owner, group, umask bits", "cache-mount contents"} <= set(EXCLUDED_FIELDS)


def test_content_exec_bit_link_target_and_new_files_change_the_key(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    keys = {_copy_key(root)}
    (root / "tools/README").write_text("changed\n")
    keys.add(_copy_key(root))
    os.chmod(root / "tools/README", 0o755)
    keys.add(_copy_key(root))
    (root / "tools/link").unlink()
    os.symlink("README", root / "tools/link")
    keys.add(_copy_key(root))
    (root / "tools/new").write_text("")
    keys.add(_copy_key(root))
    assert len(keys) == 5


def test_a_missing_copy_source_has_no_facts(tmp_path: Path) -> None:
    assert copy_facts(tmp_path, "nowhere") is None


def test_inputs_that_match_nothing_are_still_part_of_the_key(tmp_path: Path) -> None:
    empty = content_facts(tmp_path, ["requirements.txt"])
    (tmp_path / "requirements.txt").write_text("flask==3\n")
    assert digest_facts(empty) != digest_facts(content_facts(tmp_path, ["requirements.txt"]))


def test_the_parent_chain_and_the_lock_are_in_the_key() -> None:
    step = {"kind": "run", "run": "make"}
    base = key_of(layer_document(parent="sha256:" + "1" * 64, step=step))
    assert base != key_of(layer_document(parent="sha256:" + "2" * 64, step=step))
    assert base != key_of(
        layer_document(parent="sha256:" + "1" * 64, step=step, lock={"versions": {"gcc": "12"}})
    )
