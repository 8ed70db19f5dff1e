"""Reading a job's files on the host without ever following a link out of them.

The runner reads and writes cache paths through host directories (the workspace, the overlay's
upper layer) between steps. Everything in them was written by the job's own code, which may be
hostile: a symlink ``build -> /etc`` in the workspace must never make kiln pack the host's ``/etc``
or restore into it. So: no path here is resolved by the kernel across a symlink. Walks use
``lstat`` and do not descend into links, and :func:`safe_path` refuses a path one of whose
existing parents is a link.

Facts about files are what a key or manifest may depend on: path, type, exec bit, size, content
and link target; never mtime, owner, group or other permission bits (see ``keys.EXCLUDED_FIELDS``).
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["FileFact", "UnsafePath", "fact_of", "file_digest", "glob_regex", "safe_path", "walk"]

_CHUNK = 1 << 20


class UnsafePath(Exception):
    """A path passes through a symbolic link (or is not what it should be) on the host."""

    def __init__(self, relpath: str, reason: str) -> None:
        super().__init__(f"{relpath} {reason}")
        self.relpath = relpath
        self.reason = reason


@dataclass(frozen=True)
class FileFact:
    """What kiln may know about one file: everything that can change a build, nothing else."""

    path: str  # relative, POSIX
    kind: str  # "file" | "link" | "dir"
    executable: bool = False
    size: int = 0
    digest: str | None = None  # "sha256:<hex>" of a file's content
    target: str | None = None  # a link's target, as written

    def describe(self) -> str:
        """A short, stable text of the fact (a value of a key document)."""
        if self.kind == "link":
            return f"link -> {self.target}"
        if self.kind == "dir":
            return "dir"
        return f"file {'755' if self.executable else '644'} {self.size} {self.digest}"


def file_digest(path: Path) -> str:
    """``sha256:<hex>`` of a regular file's content (opened without following a final link)."""
    sha = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as body:
        while chunk := body.read(_CHUNK):
            sha.update(chunk)
    return f"sha256:{sha.hexdigest()}"


def fact_of(root: Path, relpath: str, st: os.stat_result | None = None) -> FileFact | None:
    """The fact of ``root/relpath``, or ``None`` for what a cache never holds (devices, sockets)."""
    full = root / relpath
    st = st or full.lstat()
    if stat.S_ISLNK(st.st_mode):
        return FileFact(relpath, "link", target=os.readlink(full))
    if stat.S_ISDIR(st.st_mode):
        return FileFact(relpath, "dir")
    if stat.S_ISREG(st.st_mode):
        return FileFact(
            relpath, "file", executable=bool(st.st_mode & 0o111), size=st.st_size, digest=file_digest(full)
        )
    return None


def walk(root: Path, *, skip: tuple[str, ...] = ()) -> Iterator[tuple[str, os.stat_result]]:
    """Yield ``(relative path, lstat)`` of everything under ``root``, sorted, parents first.

    Links are yielded, never followed. Names in ``skip`` (relative paths) are left out with
    everything under them. ``root`` itself is not yielded; a missing ``root`` yields nothing.
    """
    try:
        names = sorted(os.listdir(root))
    except (FileNotFoundError, NotADirectoryError):
        return
    yield from _walk(root, "", names, skip)


def _walk(
    root: Path, prefix: str, names: list[str], skip: tuple[str, ...]
) -> Iterator[tuple[str, os.stat_result]]:
    for name in names:
        rel = f"{prefix}{name}"
        if rel in skip:
            continue
        st = os.lstat(root / rel)
        yield rel, st
        if stat.S_ISDIR(st.st_mode):
            yield from _walk(root, rel + "/", sorted(os.listdir(root / rel)), skip)


def safe_path(root: Path, relpath: str) -> Path:
    """``root/relpath`` after checking that no existing part of it below ``root`` is a symlink.

    The last part may be missing; so may any parent (then nothing below it exists either).

    Raises
    ------
    UnsafePath
        A part is a symbolic link, or a parent is not a directory.
    """
    current = root
    parts = [p for p in relpath.split("/") if p and p != "."]
    if ".." in parts:
        raise UnsafePath(relpath, "contains `..`")
    for index, part in enumerate(parts):
        current = current / part
        try:
            st = current.lstat()
        except FileNotFoundError:
            return root.joinpath(*parts)
        if stat.S_ISLNK(st.st_mode):
            raise UnsafePath("/".join(parts[: index + 1]), "is a symbolic link")
        if index < len(parts) - 1 and not stat.S_ISDIR(st.st_mode):
            raise UnsafePath("/".join(parts[: index + 1]), "is not a directory")
    return current


def glob_regex(pattern: str) -> re.Pattern[str]:
    """Compile a workspace glob: ``*`` and ``?`` stay within a folder, ``**`` crosses folders.

    ``src/**`` matches everything below ``src``; ``**/*.h`` matches headers at any depth;
    ``requirements*.txt`` matches in the top folder only; ``[ab]`` is a character class.
    """
    parts = [p for p in pattern.split("/") if p and p != "."]
    regex = ""
    for index, part in enumerate(parts):
        last = index == len(parts) - 1
        if part == "**":
            regex += ".*" if last else "(?:[^/]+/)*"
            continue
        regex += _segment(part) + ("" if last else "/")
    return re.compile(regex + r"\Z", re.DOTALL)


def _segment(part: str) -> str:
    out, i = "", 0
    while i < len(part):
        char = part[i]
        if char == "*":
            out += "[^/]*"
        elif char == "?":
            out += "[^/]"
        elif char == "[" and (end := part.find("]", i + 1)) > i + 1:
            body = part[i + 1 : end]
            negate = body.startswith("!")
            chars = body[1:] if negate else body
            # Ranges (`a-z`) keep their dash; every other character is literal.
            out += (
                "[" + ("^" if negate else "") + "".join(c if c == "-" else re.escape(c) for c in chars) + "]"
            )
            i = end
        else:
            out += re.escape(char)
        i += 1
    return out
