"""An uploader process SIGKILLed mid-upload; a second process resumes it, sending only what is missing."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from tests.fixtures.seaweedfs import SeaweedFS

from kiln.storage import JsonFileJournal, download_file, open_blob_store
from kiln.storage.digests import digest_file

MIB = 1024 * 1024
SIZE = 200 * MIB
PART = 8 * MIB  # TransferConfig's default
PARTS = SIZE // PART  # 25
KILL_AFTER_PARTS = 10
CHILD = Path(__file__).with_name("uploader_child.py")


@pytest.fixture(scope="module")
def spooled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, int]:
    path = tmp_path_factory.mktemp("spool") / "archive.bin"
    with open(path, "wb") as f:
        for _ in range(SIZE // (8 * MIB)):
            f.write(os.urandom(8 * MIB))
    digest, size = digest_file(path)
    return path, digest, size


def _child(args: dict[str, Any], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(CHILD), json.dumps(args)], stdout=subprocess.PIPE, text=True, env=env
    )


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["file", pytest.param("s3", marks=pytest.mark.s3)])
def test_a_killed_upload_is_resumed_by_another_process(
    backend: str, spooled: tuple[Path, str, int], tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    path, digest, size = spooled
    env = dict(os.environ)
    if backend == "file":
        url = f"file://{tmp_path / 'store'}"
    else:
        server: SeaweedFS = request.getfixturevalue("seaweedfs")
        url = server.url(f"resume/{uuid.uuid4().hex[:12]}")
        env = server.env()
    args = {"url": url, "path": str(path), "digest": digest, "size": size, "spool": str(tmp_path / "spool")}

    # First uploader: slowed to 40 MiB/s so there is a "halfway"; killed once 10 parts are done.
    first = _child({**args, "bandwidth": 40 * MIB}, env)
    assert first.stdout is not None
    reported = 0
    for line in first.stdout:
        if line.startswith("part "):
            reported += 1
            if reported == KILL_AFTER_PARTS:
                os.kill(first.pid, signal.SIGKILL)
                break
    first.wait(timeout=30)
    assert first.returncode == -signal.SIGKILL

    # What survived: the journal names the upload; the server lists the parts that landed.
    record = JsonFileJournal(tmp_path / "spool").load(digest)
    assert record is not None and record.part_size_bytes == PART
    options = {} if backend == "file" else request.getfixturevalue("seaweedfs").options()
    store = open_blob_store(url, **options)
    local_md5 = _part_md5s(path)
    landed = {
        p.part_number for p in store.list_parts(record.upload_id) if p.etag == local_md5[p.part_number - 1]
    }
    assert KILL_AFTER_PARTS <= len(landed) < PARTS

    # Second uploader, at full speed: resumes, sends only the parts that are missing.
    second = _child(args, env)
    out, _ = second.communicate(timeout=120)
    assert second.returncode == 0, out
    result = json.loads(out.splitlines()[-1].removeprefix("result "))
    assert result == {
        "parts_total": PARTS,
        "parts_uploaded": PARTS - len(landed),
        "parts_resumed": len(landed),
        "uploaded_bytes": (PARTS - len(landed)) * PART,
        "existed": False,
    }
    assert sum(line.endswith(" uploaded") for line in out.splitlines()) == PARTS - len(landed)

    download_file(store, digest, tmp_path / "check.bin")  # verifies the sha256 of the whole blob
    assert list(store.list_uploads()) == []
    assert JsonFileJournal(tmp_path / "spool").load(digest) is None
    store.close()


def _part_md5s(path: Path) -> list[str]:
    with open(path, "rb") as f:
        return [hashlib.md5(chunk).hexdigest() for chunk in iter(lambda: f.read(PART), b"")]
