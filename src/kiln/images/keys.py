"""Layer keys: ``sha256`` over a canonical JSON document of everything that can change a layer.

A layer's document holds (issue #6, ARCHITECTURE.md §7):

- the format tag :data:`LAYER_FORMAT` (change how layers are made → bump it → every old key misses);
- the parent's **ChainID**: the *output* of the layers below, not their keys, so a rebuilt layer
  with identical bytes leaves the layers above it cached (Nix's early cut-off);
- the canonical step: command, shell, the environment and working directory it runs with, the
  network flag, cache-mount *targets*, the platform;
- the content of what it reads from the repository (``copy`` sources, ``inputs``): path, type,
  exec bit, size, content digest and link target of each file;
- the step's lock entries (a base's resolved digest or Debian release, an ``apt`` step's versions).

:data:`EXCLUDED_FIELDS` lists what never enters a key, and why; a test changes each and checks
the key stays the same.
"""

from __future__ import annotations

import hashlib
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kiln.caches.files import fact_of, safe_path, walk
from kiln.caches.keys import canonical_json, collect_files, current_platform

__all__ = [
    "EXCLUDED_FIELDS",
    "LAYER_FORMAT",
    "content_facts",
    "copy_facts",
    "digest_facts",
    "key_of",
    "layer_document",
]

LAYER_FORMAT = "kiln.image.layer.v1"

EXCLUDED_FIELDS: Mapping[str, str] = {
    "mtime, owner, group, umask bits": "a fresh checkout has new ones; content and the exec bit decide",
    "cache-mount contents": "a cache mount only speeds a step up; its target is in the key",
    "the step's name and the image's name": "renaming changes nothing that is built",
    "host paths": "runners keep their state in different places",
    "run, job and attempt ids, secrets": "an input that changes every run, or must never be stored",
}


def key_of(document: Mapping[str, Any]) -> str:
    """``sha256:<hex>`` of the canonical JSON of ``document``."""
    return "sha256:" + hashlib.sha256(canonical_json(document)).hexdigest()


def digest_facts(facts: Mapping[str, str]) -> str:
    """One digest for a set of file facts (``{relative path: FileFact.describe()}``)."""
    return key_of({"files": dict(facts)})


def content_facts(root: Path, patterns: list[str]) -> dict[str, str]:
    """The facts of the repository files ``patterns`` (globs) match; a pattern matching nothing
    is recorded too (adding the file later must change the key)."""
    matched, unmatched = collect_files(root, patterns)
    facts = dict(matched)
    for pattern in unmatched:
        facts[f"<no match> {pattern}"] = "absent"
    return facts


def copy_facts(root: Path, src: str) -> dict[str, str] | None:
    """The facts of a ``copy`` source (a file, or a folder and everything below it).

    Returns ``None`` when the source does not exist in the repository.
    """
    path = safe_path(root, src)
    try:
        st = path.lstat()
    except FileNotFoundError:
        return None
    if not stat.S_ISDIR(st.st_mode):
        fact = fact_of(root, src, st)
        return {".": fact.describe()} if fact is not None else {}
    facts: dict[str, str] = {}
    for rel, child in walk(path):
        fact = fact_of(path, rel, child)
        if fact is not None:
            facts[rel] = fact.describe()
    return facts


def layer_document(
    *,
    parent: str | None,
    step: Mapping[str, Any],
    content: str | None = None,
    lock: Mapping[str, Any] | None = None,
    platform: str | None = None,
) -> dict[str, Any]:
    """The document a layer's key is the hash of.

    Parameters
    ----------
    parent
        The ChainID of the layers below (``None`` for a base).
    step
        The canonical step (for a base: its kind and resolved reference).
    content
        :func:`digest_facts` of what the step reads from the repository.
    lock
        The step's lock entries.
    platform
        ``linux/x86_64``; defaults to this machine's.
    """
    return {
        "format": LAYER_FORMAT,
        "platform": platform or current_platform(),
        "parent": parent,
        "step": dict(step),
        "content": content,
        "lock": dict(lock) if lock else None,
    }
