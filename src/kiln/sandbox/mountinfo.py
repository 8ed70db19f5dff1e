"""Reading /proc/<pid>/mountinfo."""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["mount_points", "unescape"]

_OCTAL = re.compile(r"\\([0-7]{3})")


def unescape(field: str) -> str:
    """Undo mountinfo's octal escapes (space, tab, newline and backslash become ``\\NNN``)."""
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), field)


def mount_points(mountinfo: Path = Path("/proc/self/mountinfo")) -> list[str]:
    """Every mount point in the mount namespace of ``mountinfo``'s process, in mount order."""
    with open(mountinfo) as lines:
        return [unescape(line.split()[4]) for line in lines if line.strip()]
