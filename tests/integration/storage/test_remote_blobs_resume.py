"""A runner's upload SIGKILLed halfway; a second process on the same machine resumes it through grants."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from kiln.metadata.tables import UploadSession
from kiln.storage import JsonFileJournal
from kiln.storage.digests import digest_file

from .plane import MIB, TWO_PAIRS, Plane

SIZE = 100 * MIB
PART = 5 * MIB  # the plane's SMALL_PARTS
PARTS = SIZE // PART  # 20
KILL_AFTER_PARTS = 8
CHILD = Path(__file__).with_name("remote_uploader_child.py")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def spooled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, int]:
    path = tmp_path_factory.mktemp("spool") / "archive.bin"
    with open(path, "wb") as f:
        for _ in range(SIZE // MIB):
            f.write(os.urandom(MIB))
    digest, size = digest_file(path)
    return path, digest, size


def _child(args: dict[str, Any]) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.Popen(
        [sys.executable, str(CHILD), json.dumps(args)], stdout=subprocess.PIPE, text=True, env=env
    )


@pytest.mark.parametrize("plane", TWO_PAIRS, indirect=True)
def test_a_killed_runner_upload_is_resumed_by_another_process(
    plane: Plane, spooled: tuple[Path, str, int], tmp_path: Path
) -> None:
    path, digest, size = spooled
    leased = plane.lease()
    spool = tmp_path / "runner-spool"
    args = {
        "server": plane.url,
        "api_token": plane.token,
        "attempt_id": leased.attempt_id,
        "lease_token": leased.lease_token,
        "path": str(path),
        "digest": digest,
        "size": size,
        "spool": str(spool),
    }

    # First uploader: slowed down so that there is a "halfway"; killed once 8 parts are done.
    first = _child({**args, "bandwidth": 20 * MIB})
    assert first.stdout is not None
    done = 0
    for line in first.stdout:
        if line.startswith("part "):
            done += 1
            if done == KILL_AFTER_PARTS:
                os.kill(first.pid, signal.SIGKILL)
                break
    first.wait(timeout=30)
    assert first.returncode == -signal.SIGKILL

    # What survived: the runner's journal names the upload, the control plane's session holds it,
    # and the store lists the parts that landed.
    record = JsonFileJournal(spool / "blob-uploads").load(digest)
    assert record is not None and record.part_size_bytes == PART
    with plane.cp.db.read_session() as session:
        row = session.scalars(select(UploadSession).where(UploadSession.upload_id == record.upload_id)).one()
        assert (row.state, row.held_by, row.digest) == ("open", leased.attempt_id, digest)
    md5s = _part_md5s(path)
    landed = {
        p.part_number for p in plane.store.list_parts(record.upload_id) if p.etag == md5s[p.part_number - 1]
    }
    assert KILL_AFTER_PARTS <= len(landed) < PARTS

    # Second uploader, full speed: resumes the same session and sends only what is missing.
    second = _child(args)
    out, _ = second.communicate(timeout=180)
    assert second.returncode == 0, out
    result = json.loads(out.splitlines()[-1].removeprefix("result "))
    assert (result["parts"], result["parts_sent"], result["resumed_parts"]) == (
        PARTS,
        PARTS - len(landed),
        len(landed),
    )
    assert result["bytes_sent"] == (PARTS - len(landed)) * PART
    assert not result["existed"]
    assert sum(line.endswith(" uploaded") for line in out.splitlines()) == PARTS - len(landed)

    with plane.cp.db.read_session() as session:
        row = session.scalars(select(UploadSession).where(UploadSession.upload_id == record.upload_id)).one()
        assert (row.state, row.outcome) == ("completed", "created")
    assert list(plane.store.list_uploads()) == []
    assert JsonFileJournal(spool / "blob-uploads").load(digest) is None
    back = tmp_path / "back.bin"
    assert plane.blobs(leased, tmp_path / "other-spool").download(digest, back) == size  # verified


def _part_md5s(path: Path) -> list[str]:
    with open(path, "rb") as f:
        return [hashlib.md5(chunk).hexdigest() for chunk in iter(lambda: f.read(PART), b"")]
