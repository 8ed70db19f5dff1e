"""``apt:`` steps: resolve package versions once (into kiln.lock), then install exactly those.

Resolving runs ``apt-get install --simulate`` in a throwaway sandbox over the parent image: apt
works out the whole closure of the requested packages against the mirror as it is now, and every
``Inst name (version …)`` line becomes a lock entry. The build then installs ``name=version`` for
every package of that closure, so the layer depends on the lock, not on the day it was built; its
key holds the versions. When the mirror has moved on and a pinned version is gone, apt says so
(:func:`missing_versions`) and the build resolves again, says so, and records the new versions.

apt's package lists and downloaded ``.deb`` files live in cache mounts: kept between builds on
the runner, never in the layer (research/images.md A.8: 159 MB → 3.9 MB for ``make jq``).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping

__all__ = [
    "APT_CACHE_MOUNTS",
    "APT_ENV",
    "install_script",
    "missing_versions",
    "parse_simulation",
    "simulate_script",
]

APT_CACHE_MOUNTS = ("/var/cache/apt/archives", "/var/lib/apt/lists")
APT_ENV = {"DEBIAN_FRONTEND": "noninteractive"}
# Keep the downloaded .deb files (they are in a cache mount); Debian's docker images delete them.
_APT_OPTIONS = "-o APT::Keep-Downloaded-Packages=true -o Dpkg::Use-Pty=0 -o Acquire::Retries=3"
_INST = re.compile(r"^Inst (\S+) (?:\[[^\]]*\] )?\((\S+) ")
_MISSING = re.compile(r"Version '([^']+)' for '([^']+)' was not found")


def _update() -> str:
    # The docker-clean hook of Debian's own images would empty the cache mount after every install.
    return f"rm -f /etc/apt/apt.conf.d/docker-clean\napt-get {_APT_OPTIONS} update -qq\n"


def simulate_script(packages: list[str]) -> str:
    """The shell script that prints what installing ``packages`` would install now."""
    names = " ".join(shlex.quote(p) for p in packages)
    return _update() + f"apt-get {_APT_OPTIONS} install --simulate -y --no-install-recommends {names}\n"


def parse_simulation(output: str) -> dict[str, str]:
    """``{package: version}`` from the ``Inst`` lines of a simulated install."""
    versions: dict[str, str] = {}
    for line in output.splitlines():
        found = _INST.match(line.strip())
        if found:
            versions[found.group(1)] = found.group(2)
    return dict(sorted(versions.items()))


def install_script(versions: Mapping[str, str]) -> str:
    """The shell script that installs exactly ``versions`` (the lock's closure)."""
    pins = " ".join(shlex.quote(f"{name}={version}") for name, version in sorted(versions.items()))
    return (
        _update()
        + f"apt-get {_APT_OPTIONS} install -y -qq --no-install-recommends {pins}\n"
        + "rm -f /var/cache/apt/*.bin\n"
    )


def missing_versions(output: str) -> list[str]:
    """``name=version`` pins apt could not find (the mirror moved on since they were locked)."""
    return [f"{name}={version}" for version, name in _MISSING.findall(output)]
