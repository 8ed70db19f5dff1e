import subprocess

from kiln.source import list_source_files, snapshot_source


def _git(root, *args):
    subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True)


def test_outside_git_every_file_but_dot_git(tmp_path):
    (tmp_path / "a.txt").write_text("a")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.txt").write_text("b")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "config").write_text("x")
    files, from_git = list_source_files(tmp_path)
    assert not from_git
    assert files == ["a.txt", "sub/b.txt"]


def test_in_git_tracked_plus_untracked_not_ignored(tmp_path):
    _git(tmp_path, "init", "-q")
    (tmp_path / ".gitignore").write_text("build/\n*.log\n")
    (tmp_path / "tracked.c").write_text("t")
    (tmp_path / "gone.c").write_text("g")
    _git(tmp_path, "add", ".")
    (tmp_path / "gone.c").unlink()
    (tmp_path / "new.c").write_text("n")
    (tmp_path / "build").mkdir()
    (tmp_path / "build" / "out.o").write_text("o")
    (tmp_path / "debug.log").write_text("l")
    files, from_git = list_source_files(tmp_path)
    assert from_git
    assert files == [".gitignore", "new.c", "tracked.c"]


def test_snapshot_digest_depends_on_content_only(tmp_path):
    (tmp_path / "a.txt").write_text("a")
    spool = tmp_path.parent / (tmp_path.name + "-spool")
    first = snapshot_source(tmp_path, spool)
    (tmp_path / "a.txt").touch()
    second = snapshot_source(tmp_path, spool)
    (tmp_path / "a.txt").write_text("b")
    third = snapshot_source(tmp_path, spool)
    assert first.info.digest == second.info.digest != third.info.digest
