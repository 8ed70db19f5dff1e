"""``kiln.lock``: mutable names resolved to what they meant, next to the workflow file.

Keys depend on the lock, never on a moving name, so the same YAML builds the same environment
until someone runs ``kiln images lock --update``::

    {
      "kiln_lock": 1,
      "bases": {
        "docker://127.0.0.1:5000/tools/cc:1": {"digest": "sha256:…"},
        "debian:bookworm": {"mirror": "http://deb.debian.org/debian", "architecture": "amd64",
                            "inrelease": "sha256:…"}
      },
      "apt": {
        "toolchain/0": {"packages": ["gcc", "make"], "versions": {"gcc": "4:12.2.0-3", …}}
      }
    }

Bases are keyed by the ``from:`` text; ``apt`` steps by ``<image>/<step index>``, with the packages
they asked for (an entry for other packages is stale). The file is written with sorted keys and a
trailing newline, so it diffs well and is the same wherever it is written.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kiln.errors import UsageError

__all__ = ["LOCK_FILENAME", "Lock", "lock_path"]

LOCK_FILENAME = "kiln.lock"
_VERSION = 1


def lock_path(workflow: Path) -> Path:
    """Where the lock of ``workflow`` lives: beside it."""
    return workflow.resolve().parent / LOCK_FILENAME


@dataclass
class Lock:
    """The resolved names of one workflow, and what this process changed in them."""

    bases: dict[str, dict[str, Any]] = field(default_factory=dict)
    apt: dict[str, dict[str, Any]] = field(default_factory=dict)
    changes: list[str] = field(default_factory=list)  # one line per entry resolved anew, for humans

    # -- reading and writing ---------------------------------------------------------------------

    @classmethod
    def from_json(cls, data: Any, *, source: str = LOCK_FILENAME) -> Lock:
        if data is None:
            return cls()
        if not isinstance(data, dict) or data.get("kiln_lock") != _VERSION:
            raise UsageError(f"{source} is not a kiln lock file of version {_VERSION}")
        bases, apt = data.get("bases", {}), data.get("apt", {})
        if not isinstance(bases, dict) or not isinstance(apt, dict):
            raise UsageError(f"{source}: `bases` and `apt` must be mappings")
        return cls(
            bases={str(k): dict(v) for k, v in bases.items()}, apt={str(k): dict(v) for k, v in apt.items()}
        )

    def to_json(self) -> dict[str, Any]:
        return {"kiln_lock": _VERSION, "bases": self.bases, "apt": self.apt}

    @classmethod
    def load(cls, path: Path) -> Lock:
        """Read ``path``; a missing file is an empty lock."""
        try:
            text = path.read_text()
        except FileNotFoundError:
            return cls()
        except OSError as exc:
            raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from exc
        try:
            return cls.from_json(json.loads(text), source=str(path))
        except ValueError as exc:
            raise UsageError(f"{path} is not valid JSON: {exc}") from exc

    def save(self, path: Path) -> None:
        """Write the lock atomically (a reader never sees half a file)."""
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n")
        os.replace(tmp, path)

    # -- entries ---------------------------------------------------------------------------------

    def base(self, text: str) -> dict[str, Any] | None:
        return self.bases.get(text)

    def set_base(self, text: str, entry: dict[str, Any], why: str) -> None:
        if self.bases.get(text) != entry:
            self.bases[text] = entry
            self.changes.append(f"{text}: {why}")

    @staticmethod
    def apt_id(image: str, index: int) -> str:
        return f"{image}/{index}"

    def apt_entry(self, image: str, index: int, packages: list[str]) -> dict[str, Any] | None:
        """The versions recorded for this ``apt`` step, unless it asked for other packages then."""
        entry = self.apt.get(self.apt_id(image, index))
        if entry is None or sorted(entry.get("packages", [])) != sorted(packages):
            return None
        return entry

    def set_apt(self, image: str, index: int, entry: dict[str, Any], why: str) -> None:
        key = self.apt_id(image, index)
        if self.apt.get(key) != entry:
            self.apt[key] = entry
            self.changes.append(f"{key} (apt): {why}")

    def prune(self, bases: set[str], apt_ids: set[str]) -> list[str]:
        """Drop the entries no base text in ``bases`` and no apt step in ``apt_ids`` uses any more.

        A workflow whose ``from:`` now names another tag, or whose apt step moved, leaves its old
        entry behind; :command:`kiln images lock` calls this so the file says only what is used.
        Returns the ids removed (each also a line in ``changes``).
        """
        removed = [k for k in self.bases if k not in bases] + [k for k in self.apt if k not in apt_ids]
        for key in removed:
            if self.bases.pop(key, None) is not None:
                self.changes.append(f"{key}: removed (no image uses it)")
            else:
                del self.apt[key]
                self.changes.append(f"{key} (apt): removed (no apt step there)")
        return removed

    def subset(self, bases: list[str], images: list[str]) -> Lock:
        """The entries the given base texts and images use (what a job's image plan carries)."""
        prefixes = tuple(f"{name}/" for name in images)
        return Lock(
            bases={k: v for k, v in self.bases.items() if k in bases},
            apt={k: v for k, v in self.apt.items() if k.startswith(prefixes)},
        )

    def merge(self, other: Lock) -> list[str]:
        """Take ``other``'s entries over ours; return the ids that changed."""
        changed = [k for k, v in other.bases.items() if self.bases.get(k) != v]
        changed += [k for k, v in other.apt.items() if self.apt.get(k) != v]
        self.bases.update(other.bases)
        self.apt.update(other.apt)
        return changed
