"""What does moving blobs through the control plane's grants cost, against holding the credentials?

Question: a runner has no storage credentials; it asks the control plane for an upload session and
per-part grants, sends the parts to presigned URLs (S3) or to the control plane itself (file
backend), and the control plane completes the upload. How much slower is that than
``upload_file`` / ``download_file`` straight into the same store with credentials, in the same run?

Workload: one file of random bytes (256 MiB by default), hot in the page cache; default
``TransferConfig`` on both sides (8 MiB parts, 4 in flight). Every transfer goes to a fresh key
prefix or directory, so nothing is deduplicated. The control plane is the real app served on a
loopback port (uvicorn, as ``kiln server``), with SQLite metadata, in the benchmark's own process,
as in ``kiln run`` (the server's threads share the GIL with the runner's); SeaweedFS is started on
free loopback ports. The file backend fsyncs in both cases.

Reproduce (from the repository root)::

    .venv/bin/python bench/bench_remote_blobs.py            # 256 MiB
    .venv/bin/python bench/bench_remote_blobs.py --mib 64   # quicker

Prints a table and writes ``bench/results/remote_blobs.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import sys
import tempfile
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # for tests.fixtures.seaweedfs, which knows how to start the server

from bench.bench_storage import timed  # noqa: E402
from tests.fixtures.seaweedfs import start_seaweedfs, stop_seaweedfs  # noqa: E402

from kiln.api.app import create_app  # noqa: E402
from kiln.api.plane import ControlPlane  # noqa: E402
from kiln.api.server import BackgroundServer  # noqa: E402
from kiln.metadata.db import Database  # noqa: E402
from kiln.runner.blobs import RemoteBlobs  # noqa: E402
from kiln.runner.client import ControlPlaneClient  # noqa: E402
from kiln.scheduler import RunContext, Scheduler  # noqa: E402
from kiln.storage import BlobStore, download_file, open_blob_store, upload_file  # noqa: E402
from kiln.storage.digests import digest_file  # noqa: E402
from kiln.storage.policy import BlobPolicy  # noqa: E402

RESULTS = REPO / "bench" / "results" / "remote_blobs.json"


def remote_round_trip(
    store: BlobStore, work: Path, path: Path, digest: str, size: int
) -> tuple[float, float, dict[str, int]]:
    """Upload and download through a served control plane; return the two times and the upload's counts."""
    db_path = work / f"kiln-{uuid.uuid4().hex[:6]}.db"
    db = Database(f"sqlite:///{db_path}")
    db.migrate()
    token = secrets.token_urlsafe(16)
    plane = ControlPlane(
        scheduler=Scheduler(db, lease_ttl_s=600), blobs=store, spool_dir=work / "plane-spool", api_token=token
    )
    plane.blob_policy = BlobPolicy()
    try:
        with BackgroundServer(create_app(plane)) as server:
            view = plane.scheduler.submit_run(
                RunContext(tenant="bench", repo="bench", ref="main"),
                workflow_name="bench",
                jobs=[("move", {"steps": [{"run": "true"}]})],
                workflow_json={"name": "bench"},
                workflow_text="name: bench\n",
                source_digest="sha256:" + "0" * 64,
            )
            leased = plane.scheduler.lease_next("bench-runner", run_id=view.run_id)
            assert leased is not None
            client = ControlPlaneClient(server.url, token)
            blobs = RemoteBlobs(client, leased.attempt_id, leased.lease_token, work / "runner-spool")
            result = {}

            def upload() -> None:
                done = blobs.upload(path, digest=digest, size=size)
                result.update(parts=done.parts, parts_sent=done.parts_sent)

            up = timed(upload)
            down = timed(lambda: blobs.download(digest, work / "remote.back"))
            client.close()
    finally:
        db.dispose()
    return up, down, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=256)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="kiln-bench-remote-") as tmp:
        work = Path(tmp)
        path = work / "blob.bin"
        with open(path, "wb") as f:
            for _ in range(args.mib):
                f.write(os.urandom(1024 * 1024))
        digest, size = digest_file(path)
        server = start_seaweedfs(work / "weed")
        rows = []
        try:
            for backend in ("file", "s3"):

                def fresh(backend: str = backend) -> BlobStore:
                    if backend == "file":
                        return open_blob_store((work / f"store-{uuid.uuid4().hex[:6]}").as_uri())
                    return open_blob_store(server.url(f"bench/{uuid.uuid4().hex[:8]}"), **server.options())

                direct_store = fresh()
                direct_up = timed(lambda s=direct_store: upload_file(s, path, digest, size))
                direct_down = timed(lambda s=direct_store: download_file(s, digest, work / "direct.back"))
                direct_store.close()
                remote_store = fresh()
                remote_up, remote_down, counts = remote_round_trip(remote_store, work, path, digest, size)
                remote_store.close()
                for kind, direct, remote in (
                    ("upload", direct_up, remote_up),
                    ("download", direct_down, remote_down),
                ):
                    rows.append(
                        {
                            "backend": backend,
                            "transfer": kind,
                            "direct_s": round(direct, 3),
                            "through_grants_s": round(remote, 3),
                            "direct_mb_s": round(size / direct / 1e6, 1),
                            "through_grants_mb_s": round(size / remote / 1e6, 1),
                            "ratio": round(remote / direct, 2),
                        }
                    )
                assert counts["parts_sent"] == counts["parts"]
                (work / "direct.back").unlink()
                (work / "remote.back").unlink()
        finally:
            stop_seaweedfs(server)

    print(f"{args.mib} MiB, default TransferConfig; ratio = through grants / direct (lower is better)")
    print(f"{'backend':8} {'transfer':9} {'direct':>9} {'grants':>9} {'MB/s':>7} {'MB/s':>7} {'ratio':>6}")
    for row in rows:
        print(
            f"{row['backend']:8} {row['transfer']:9} {row['direct_s']:>8.2f}s "
            f"{row['through_grants_s']:>8.2f}s {row['direct_mb_s']:>7} {row['through_grants_mb_s']:>7} "
            f"{row['ratio']:>6}"
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "benchmark": "remote_blobs",
                "size_mib": args.mib,
                "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                "note": "measured on a shared 2-core machine while other work ran",
                "rows": rows,
            },
            indent=2,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
