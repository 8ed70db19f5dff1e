"""A whole kiln in this process for the artifact tests, stepped one job at a time.

Built on the cache tests' harness (control plane over HTTP, SQLite, a file or S3 blob store, the job
executor, blob transfer by grants, the real sandbox), with the artifact phase, and with a way to
run a run's jobs one by one so that a test can act between them: flip a byte in a stored blob,
let a retention run out.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.fixtures.seaweedfs import SeaweedFS
from tests.fixtures.uploads import upload_as as upload_through_session
from tests.integration.caches.harness import Harness, context

from kiln.api.models import SubmitIn
from kiln.artifacts.phase import ArtifactsPhase
from kiln.cli.summary import run_summary
from kiln.metadata.db import Database
from kiln.runner import ControlPlaneClient, JobExecutor
from kiln.runner.executor import JobResult
from kiln.scheduler import LeasedJob
from kiln.source import snapshot_source
from kiln.storage import BlobStore
from kiln.storage.digests import BLOB_DIR, digest_to_hex

__all__ = ["ArtifactKiln", "upload_as"]


def upload_as(db: Database, blobs: BlobStore, job: LeasedJob, data: bytes) -> tuple[str, int]:
    """Store ``data`` as the job's runner would (:func:`tests.fixtures.uploads.upload_as`)."""
    return upload_through_session(db, blobs, job.attempt_id, job.lease_token, data)


@dataclass
class ArtifactKiln:
    harness: Harness
    client: ControlPlaneClient
    weed: SeaweedFS | None = None  # the S3 server when the blob store is on it
    results: list[JobResult] = field(default_factory=list)

    @property
    def blobs(self) -> BlobStore:
        return self.harness.plane.blobs

    def submit(self, project: Path) -> str:
        snapshot = snapshot_source(project, self.harness.spool)
        try:
            self.client.upload_source(snapshot.info.digest, snapshot.archive)
        finally:
            snapshot.archive.unlink(missing_ok=True)
        body = SubmitIn(
            context=context(),
            workflow_text=(project / "kiln.yml").read_text(),
            source_digest=snapshot.info.digest,
        )
        return self.client.submit(body).run_id

    def step(self, run_id: str) -> JobResult | None:
        """Lease and run the next job of the run; None when nothing is left to run."""
        lease = self.client.lease("artifact-tests", run_id)
        if lease is None:
            return None
        executor = JobExecutor(
            self.client, self.harness.state_dir, phases=lambda: [ArtifactsPhase(poll_s=0.2)]
        )
        result = executor.execute(lease)
        self.results.append(result)
        return result

    def finish(self, run_id: str) -> dict[str, Any]:
        """Run the rest of the run; return its summary (``kiln run --json``)."""
        while self.step(run_id) is not None:
            pass
        return self.summary(run_id)

    def summary(self, run_id: str) -> dict[str, Any]:
        return run_summary(self.client.get_run(run_id))

    def log(self, run_id: str) -> str:
        return "".join(line.data for line in self.client.logs(run_id).lines)

    def flip_byte(self, digest: str, offset: int = 100) -> None:
        """Corrupt a stored blob in place, behind the store's back (a bad disk, a bad actor)."""
        store: Any = self.blobs
        key = f"{BLOB_DIR}/{digest_to_hex(digest)}"
        if self.weed is None:
            path = Path(store.root) / key
            data = bytearray(path.read_bytes())
            data[offset % len(data)] ^= 0x01
            os.chmod(path, 0o644)
            path.write_bytes(bytes(data))
            return
        s3 = self.weed.client()
        full = f"{store.prefix}/{key}" if store.prefix else key
        data = bytearray(s3.get_object(Bucket=store.bucket, Key=full)["Body"].read())
        data[offset % len(data)] ^= 0x01
        s3.put_object(Bucket=store.bucket, Key=full, Body=bytes(data))
