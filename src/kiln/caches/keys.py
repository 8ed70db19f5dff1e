"""Cache keys: ``sha256`` over a canonical JSON document of every input, the document kept.

The document has two parts (ARCHITECTURE.md §3):

- ``kiln``: the inputs kiln adds itself and users never declare: the job's image digest (its
  toolchain), the platform, the cache type, the archive format and the cache paths in their
  *logical* form (``~/.cache/pip``, never a host path). Their hash alone is the *version*: a
  fallback restore (``restore-keys``) only takes an entry of the same version, so two images or two
  archive formats never share anything.
- ``declared``: what the user pinned: the files the ``key.files`` globs match (path, type, exec bit,
  size, content digest, link target), the values of the ``key.env`` variables, the literal ``values``.

The format tag ``kiln.cache.key.v1`` is inside the hashed document: changing how keys are made
changes the tag, and every old key misses cleanly instead of meaning something else.
"""

from __future__ import annotations

import hashlib
import json
import platform
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kiln.caches.files import fact_of, glob_regex, walk

__all__ = [
    "EXCLUDED_FIELDS",
    "KEY_FORMAT",
    "Difference",
    "KilnInputs",
    "canonical_json",
    "collect_files",
    "current_platform",
    "differences",
    "flatten",
    "input_order",
    "key_document",
    "key_of",
    "version_of",
]

KEY_FORMAT = "kiln.cache.key.v1"

#: What never enters a key, and why. ``tests/unit/caches/test_keys.py`` changes each and checks
#: that the key stays the same.
EXCLUDED_FIELDS: Mapping[str, str] = {
    "mtime": "a fresh checkout has new mtimes; content decides",
    "atime/ctime": "reading or chmod-ing a file changes nothing it builds",
    "owner/group": "the sandbox runs as root; ownership is an accident of the checkout",
    "mode bits other than exec": "umask differs per machine; only the exec bit changes behaviour",
    "host paths": "runners keep their work in different places; the logical path is what matters",
    "the cache name": "the name selects entries next to the key; it is not an input",
    "run, job and attempt ids": "every run has new ones; an input that always changes is no key",
    "secret values": "a key is stored and shown; a secret named in `key.env` is refused instead",
}


def current_platform() -> str:
    """``linux/x86_64``: the OS and machine the runner builds for."""
    return f"{sys.platform}/{platform.machine()}"


@dataclass(frozen=True)
class KilnInputs:
    """The inputs kiln adds to every key of a cache."""

    image: str
    platform: str
    cache_type: str
    archive: str
    paths: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "image": self.image,
            "platform": self.platform,
            "type": self.cache_type,
            "archive": self.archive,
            "paths": list(self.paths),
        }


def canonical_json(value: Any) -> bytes:
    """The one byte form of a JSON value that is hashed: sorted keys, no spaces, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _digest(value: Any) -> str:
    return "sha256:" + hashlib.sha256(canonical_json(value)).hexdigest()


def collect_files(workspace: Path, patterns: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """Describe every workspace file a pattern matches, and name the patterns that match nothing.

    A pattern that matches a folder takes everything below it. Links are described by their
    target and never followed.

    Returns
    -------
    tuple[dict[str, str], list[str]]
        ``{relative path: FileFact.describe()}`` for regular files and links, and the patterns
        without a match (kept in the key anyway: adding the file later must change the key).
    """
    if not patterns:
        return {}, []
    compiled = [(p, glob_regex(p)) for p in patterns]
    matched: dict[str, str] = {}
    used: set[str] = set()
    taken_dirs: list[str] = []
    for rel, st in walk(workspace):
        owner = next((d for d in taken_dirs if rel.startswith(d + "/")), None)
        hits = [p for p, regex in compiled if regex.match(rel)]
        if not hits and owner is None:
            continue
        used.update(hits)
        fact = fact_of(workspace, rel, st)
        if fact is None:
            continue
        if fact.kind == "dir":
            if hits:
                taken_dirs.append(rel)
            continue
        matched[rel] = fact.describe()
    return matched, [p for p in patterns if p not in used and not _taken(p, taken_dirs)]


def _taken(pattern: str, dirs: list[str]) -> bool:
    regex = glob_regex(pattern)
    return any(regex.match(d) for d in dirs)


def key_document(
    kiln: KilnInputs,
    *,
    patterns: Sequence[str],
    files: Mapping[str, str],
    env: Mapping[str, str | None],
    values: Sequence[str],
) -> dict[str, Any]:
    """The canonical input document of a key.

    Parameters
    ----------
    kiln
        The inputs kiln adds.
    patterns, files
        The ``key.files`` globs as written, and what they matched (see :func:`collect_files`).
    env
        ``key.env`` names and their values in the job (``None``: not set, which differs from ``""``).
    values
        The literal ``key.values``.
    """
    return {
        "format": KEY_FORMAT,
        "kiln": kiln.as_dict(),
        "declared": {
            "patterns": list(patterns),
            "files": dict(sorted(files.items())),
            "env": dict(sorted(env.items())),
            "values": list(values),
        },
    }


def key_of(document: Mapping[str, Any]) -> str:
    """The key: ``sha256:`` of the whole canonical document."""
    return _digest(document)


def version_of(document: Mapping[str, Any]) -> str:
    """The version: ``sha256:`` of the format tag and the kiln-added inputs only."""
    return _digest({"format": document.get("format"), "kiln": document.get("kiln")})


def flatten(document: Mapping[str, Any]) -> dict[str, str]:
    """One line per input, named the way ``kiln cache explain`` shows it.

    ``kiln.image``, ``kiln.paths``, ``files.patterns``, ``file src/a.c``, ``env CC``, ``values``.
    """
    kiln = document.get("kiln") or {}
    declared = document.get("declared") or {}
    flat: dict[str, str] = {"format": str(document.get("format"))}
    for name, value in sorted(kiln.items()):
        flat[f"kiln.{name}"] = value if isinstance(value, str) else json.dumps(value)
    flat["files.patterns"] = json.dumps(declared.get("patterns", []))
    for path, described in (declared.get("files") or {}).items():
        flat[f"file {path}"] = described
    for name, value in (declared.get("env") or {}).items():
        flat[f"env {name}"] = "(not set)" if value is None else json.dumps(value)
    flat["values"] = json.dumps(declared.get("values", []))
    return flat


@dataclass(frozen=True)
class Difference:
    """One input that differs: ``None`` on a side means the input is absent there."""

    name: str
    ours: str | None
    theirs: str | None


def differences(ours: Mapping[str, Any], theirs: Mapping[str, Any]) -> list[Difference]:
    """The inputs whose values differ between two key documents, in a stable order."""
    a, b = flatten(ours), flatten(theirs)
    return [
        Difference(name, a.get(name), b.get(name))
        for name in sorted(a.keys() | b.keys(), key=input_order)
        if a.get(name) != b.get(name)
    ]


def input_order(name: str) -> tuple[int, str]:
    """Sort key of flattened inputs: the format, then kiln's inputs, then the declared ones."""
    rank = 0 if name == "format" else 1 if name.startswith("kiln.") else 2
    return rank, name
