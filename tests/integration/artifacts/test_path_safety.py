"""A lying producer: a crafted artifact archive (traversal, a link out) is refused by the job that needs it.

The crafted archive goes through the same API a runner uses (reserve, upload by grants, finalize),
on the file store and on SeaweedFS,
as a compromised runner could; the job that needs it runs for real and must refuse it whole.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import pytest
import zstandard

from kiln.api.models import CompleteIn
from kiln.artifacts.wire import ArtifactReserveIn, ManifestEntry
from kiln.runner.blobs import RemoteBlobs

from .harness import ArtifactKiln

pytestmark = pytest.mark.sandbox

WORKFLOW = """
name: crafted
jobs:
  build:
    image: busybox
    steps: [{run: "true"}]
    artifacts: [{name: out, paths: [out]}]
  test:
    image: busybox
    needs: [build]
    steps: [{run: "echo should-not-run"}]
"""


def _member(name: str, kind: bytes, data: bytes = b"", link: str = "") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.mode, info.linkname = (
        kind,
        len(data),
        0o755 if kind == tarfile.DIRTYPE else 0o644,
        link,
    )
    return info, data


CRAFTED = {
    "traversal": [
        _member("out", tarfile.DIRTYPE),
        _member("out/../../../escaped", tarfile.REGTYPE, b"pwned"),
    ],
    "link out": [
        _member("out", tarfile.DIRTYPE),
        _member("out/etc", tarfile.SYMTYPE, link="/tmp"),
        _member("out/etc/escaped", tarfile.REGTYPE, b"pwned"),
    ],
    "link up": [
        _member("out", tarfile.DIRTYPE),
        _member("out/up", tarfile.SYMTYPE, link="../.."),
        _member("out/up/escaped", tarfile.REGTYPE, b"pwned"),
    ],
}


def _crafted(path: Path, members: list[tuple[tarfile.TarInfo, bytes]]) -> tuple[str, int]:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    blob = zstandard.ZstdCompressor().compress(raw.getvalue())
    path.write_bytes(blob)
    return "sha256:" + hashlib.sha256(blob).hexdigest(), len(blob)


@pytest.mark.parametrize("case", list(CRAFTED))
def test_a_crafted_artifact_is_refused_and_nothing_escapes(
    kiln: ArtifactKiln, project, tmp_path: Path, case: str
) -> None:
    run_id = kiln.submit(project({"kiln.yml": WORKFLOW}))
    lease = kiln.client.lease("liar", run_id)
    assert lease is not None and lease.job_name == "build"
    archive = tmp_path / "crafted.tar.zst"
    digest, size = _crafted(archive, CRAFTED[case])
    # What a lying runner would claim: a manifest listing exactly what it packed.
    manifest = [
        ManifestEntry(
            path=info.name,
            kind="dir" if info.isdir() else "link" if info.issym() else "file",
            mode=info.mode,
            size_bytes=info.size,
            sha256="sha256:" + hashlib.sha256(data).hexdigest() if info.isreg() else None,
            target=info.linkname or None,
        )
        for info, data in CRAFTED[case]
    ]
    reserved = kiln.client.reserve_artifact(
        lease.attempt_id,
        lease.lease_token,
        ArtifactReserveIn(
            name="out", digest=digest, size_bytes=size, files=1, unpacked_bytes=5, manifest=manifest
        ),
    )
    RemoteBlobs(kiln.client, lease.attempt_id, lease.lease_token, tmp_path / "liar-spool").upload(
        archive, digest=digest, size=size
    )
    kiln.client.finalize_artifact(lease.attempt_id, lease.lease_token, reserved.artifact_id, digest, size)
    kiln.client.complete(lease.attempt_id, lease.lease_token, CompleteIn(status="success"))

    result = kiln.step(run_id)
    assert result is not None and result.status == "failed"
    assert result.error_message is not None
    assert result.error_message.startswith(
        "artifact `out` of job `build` was refused: unsafe artifact entry refused: "
    )
    assert "should-not-run" not in kiln.log(run_id)
    assert not list(kiln.harness.state_dir.parent.rglob("escaped")) and not Path("/tmp/escaped").exists()
