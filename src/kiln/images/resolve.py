"""Mutable names → what they mean now: registry tags, Debian suites, OCI layout tags.

Each resolver answers one lock entry (:mod:`.lockfile`). Resolving needs the network (a registry,
the Debian mirror) and is done only when the lock has no entry, an entry is stale, or the user
asks (``kiln images lock --update``); a build with a good lock never calls these.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx

from kiln.errors import ImageBuildFailed, ImageSourceUnavailable, SandboxUnavailable
from kiln.spec.images import BaseRef

__all__ = [
    "DEFAULT_DEBIAN_MIRROR",
    "debian_architecture",
    "inrelease_digest",
    "insecure_registry",
    "not_in_registry",
    "oci_manifest_digest",
    "registry_call",
    "registry_digest",
    "run_tool",
]

#: The mirror debian bases come from; ``KILN_DEBIAN_MIRROR`` points runners at another one. The
#: mirror goes into the lock (and so into keys): two mirrors are two sources.
DEFAULT_DEBIAN_MIRROR = "http://deb.debian.org/debian"
_TIMEOUT_S = 60.0
_OUTPUT_LIMIT = 8000


def debian_mirror() -> str:
    return os.environ.get("KILN_DEBIAN_MIRROR", DEFAULT_DEBIAN_MIRROR).rstrip("/")


def debian_architecture() -> str:
    """dpkg's name for this machine's architecture (``amd64``)."""
    machine = os.uname().machine
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "armhf", "i686": "i386"}.get(machine, machine)


def run_tool(
    argv: list[str], *, what: str, timeout_s: float = 900.0, env: dict[str, str] | None = None
) -> str:
    """Run a host tool (skopeo, mmdebstrap); return its output or raise with the output's tail.

    Raises
    ------
    SandboxUnavailable
        The tool is not installed.
    ImageSourceUnavailable
        It failed; the message has ``what`` and the end of its output.
    """
    if shutil.which(argv[0]) is None:
        raise SandboxUnavailable(f"{argv[0]} is not installed; it is needed to {what}")
    try:
        proc = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env={**os.environ, **(env or {})},
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        raise ImageSourceUnavailable(f"cannot {what}: {argv[0]} did not finish in {timeout_s:g} s") from exc
    if proc.returncode != 0:
        output = (proc.stderr or proc.stdout).strip()[-_OUTPUT_LIMIT:]
        raise ImageSourceUnavailable(f"cannot {what}: {argv[0]} exited {proc.returncode}: {output}")
    return proc.stdout


def insecure_registry(host: str) -> bool:
    """Loopback registries speak plain HTTP (Docker's own default for 127.0.0.0/8 and localhost)."""
    name = host.rsplit(":", 1)[0] if not host.startswith("[") else host[1 : host.index("]")]
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def tls_flag(host: str, option: str = "--tls-verify") -> list[str]:
    return [f"{option}=false"] if insecure_registry(host) else []


#: What a registry answers (through skopeo) for a repository, tag or digest it does not have.
_NOT_IN_REGISTRY = ("manifest unknown", "name unknown")


def not_in_registry(exc: ImageSourceUnavailable) -> str | None:
    """What the registry said if a call failed because it lacks the image (not reachability)."""
    return next((marker for marker in _NOT_IN_REGISTRY if marker in exc.message.lower()), None)


def registry_call(argv: list[str], ref: BaseRef, *, what: str, timeout_s: float = _TIMEOUT_S * 2) -> str:
    """Run a skopeo command against the registry of ``ref``.

    Raises
    ------
    ImageBuildFailed
        The registry answered that it has no such image, tag or digest: the workflow names
        something that does not exist (the user's to fix, exit 1).
    ImageSourceUnavailable
        The registry cannot be reached or failed otherwise (exit 3).
    """
    try:
        return run_tool(argv, what=what, timeout_s=timeout_s)
    except ImageSourceUnavailable as exc:
        said = not_in_registry(exc)
        if said:
            raise ImageBuildFailed(
                f"base {ref.text}: the registry at {ref.host} has no such image, tag or digest "
                f"(it answered `{said}`)"
            ) from exc
        raise


def registry_digest(ref: BaseRef) -> str:
    """The manifest digest the tag of a ``docker://`` base names now (``skopeo inspect``).

    Raises
    ------
    ImageBuildFailed
        The registry has no such image or tag.
    ImageSourceUnavailable
        The registry cannot be reached.
    """
    if ref.digest:
        return ref.digest
    target = f"docker://{ref.host}/{ref.name}:{ref.tag}"
    digest = registry_call(
        ["skopeo", "inspect", "--format", "{{.Digest}}", *tls_flag(ref.host), "--retry-times", "2", target],
        ref,
        what=f"resolve {ref.text} (is the registry at {ref.host} reachable?)",
    ).strip()
    if not digest.startswith("sha256:"):
        raise ImageSourceUnavailable(f"cannot resolve {ref.text}: skopeo answered {digest!r}")
    return digest


def inrelease_digest(suite: str, mirror: str | None = None) -> dict[str, Any]:
    """The lock entry of ``debian:<suite>``: the mirror, the architecture, the ``InRelease`` hash.

    Raises
    ------
    ImageSourceUnavailable
        The mirror cannot be reached.
    ImageBuildFailed
        The mirror has no such suite.
    """
    mirror = (mirror or debian_mirror()).rstrip("/")
    url = f"{mirror}/dists/{suite}/InRelease"
    try:
        response = httpx.get(url, timeout=_TIMEOUT_S, follow_redirects=True)
    except httpx.HTTPError as exc:
        raise ImageSourceUnavailable(f"cannot reach the Debian mirror {mirror}: {exc}") from exc
    if response.status_code == 404:
        raise ImageBuildFailed(f"the Debian mirror {mirror} has no suite `{suite}` ({url} is not found)")
    if response.is_error:
        raise ImageSourceUnavailable(f"the Debian mirror answered HTTP {response.status_code} for {url}")
    return {
        "mirror": mirror,
        "architecture": debian_architecture(),
        "inrelease": "sha256:" + hashlib.sha256(response.content).hexdigest(),
    }


def oci_manifest_digest(layout: Path, tag: str, *, what: str) -> str:
    """The manifest digest of ``tag`` in an OCI image layout (the only manifest when no tag).

    Raises
    ------
    ImageBuildFailed
        The layout is missing or unreadable, or has no such tag.
    """
    try:
        index = json.loads((layout / "index.json").read_text())
    except (OSError, ValueError) as exc:
        raise ImageBuildFailed(f"{what}: {layout.name} is not a readable OCI image layout ({exc})") from exc
    manifests = list(index.get("manifests", []))
    if tag:
        found = [
            m for m in manifests if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag
        ]
    else:
        found = manifests if len(manifests) == 1 else []
    if not found:
        tags = sorted(
            str(m.get("annotations", {}).get("org.opencontainers.image.ref.name"))
            for m in manifests
            if m.get("annotations")
        )
        wanted = f"tag `{tag}`" if tag else "a single image (name a tag: `oci:DIR:TAG`)"
        raise ImageBuildFailed(f"{what}: the layout has no {wanted}; tags: {', '.join(tags) or 'none'}")
    return str(found[0]["digest"])
