"""How fast does kiln move a 1 GiB blob, compared with the standard tools, on the same machine?

Question: is ``kiln.storage`` (``upload_file`` / ``download_file``, default ``TransferConfig``:
8 MiB parts, 4 in flight, sha256 + per-part MD5 verified on the way) close to ``aws s3 cp``
(awscli from the venv, its defaults: 8 MB parts, 10 threads, no sha256) against the same
SeaweedFS server in the same run, and the file backend close to ``cp``?

Workload: one file of 1 GiB of random bytes (``os.urandom``; no seed needed: content does not
change the cost), hot in the page cache. Each transfer runs once per run, in a fresh key prefix or
directory, so nothing is deduplicated. kiln's file backend fsyncs what it publishes; ``cp`` does
not, so the ratio
for the file backend is against ``cp`` + ``sync`` (``cp`` alone is shown too). ``aws s3 cp`` times
include awscli's start-up (about 0.4 s), as a user would see it.

Reproduce (from the repository root; starts its own SeaweedFS on free loopback ports)::

    .venv/bin/python bench/bench_storage.py            # 1 GiB
    .venv/bin/python bench/bench_storage.py --mib 256  # smaller, quicker

Prints a table and writes ``bench/results/storage.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # for tests.fixtures.seaweedfs, which knows how to start the server

from tests.fixtures.seaweedfs import start_seaweedfs, stop_seaweedfs  # noqa: E402

from kiln.storage import download_file, open_blob_store, upload_file  # noqa: E402
from kiln.storage.digests import digest_file  # noqa: E402

RESULTS = REPO / "bench" / "results" / "storage.json"


def timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def run_aws(args: list[str], env: dict[str, str]) -> None:
    aws = Path(sys.executable).with_name("aws")
    subprocess.run([str(aws), *args], env=env, check=True, stdout=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=1024, help="file size in MiB (default 1024)")
    options = parser.parse_args()
    size = options.mib * 1024 * 1024

    work = Path(tempfile.mkdtemp(prefix="kiln-bench-storage-"))
    server = start_seaweedfs(work / "seaweedfs", volume_size_limit_mb=256)
    try:
        source = work / "blob.bin"
        with open(source, "wb") as f:
            for _ in range(options.mib):
                f.write(os.urandom(1024 * 1024))
        digest, _ = digest_file(source)  # also leaves the file hot in the page cache
        env = server.env()
        rows: list[tuple[str, str, float, float | None]] = []  # (what, tool, seconds, reference seconds)

        # -- S3 (SeaweedFS): kiln vs aws s3 cp ----------------------------------------------------
        store = open_blob_store(server.url(f"bench-{uuid.uuid4().hex[:8]}"), **server.options())
        kiln_up = timed(lambda: upload_file(store, source, digest, size))
        aws_up = timed(
            lambda: run_aws(
                [
                    "s3",
                    "cp",
                    str(source),
                    f"s3://{server.bucket}/aws/blob.bin",
                    "--endpoint-url",
                    server.endpoint,
                ],
                env,
            )
        )
        kiln_down = timed(lambda: download_file(store, digest, work / "kiln-down.bin"))
        aws_down = timed(
            lambda: run_aws(
                [
                    "s3",
                    "cp",
                    f"s3://{server.bucket}/aws/blob.bin",
                    str(work / "aws-down.bin"),
                    "--endpoint-url",
                    server.endpoint,
                ],
                env,
            )
        )
        store.close()
        rows += [
            ("s3 upload", "kiln", kiln_up, aws_up),
            ("s3 upload", "aws s3 cp", aws_up, None),
            ("s3 download", "kiln", kiln_down, aws_down),
            ("s3 download", "aws s3 cp", aws_down, None),
        ]
        for path in (work / "kiln-down.bin", work / "aws-down.bin"):
            path.unlink()

        # -- file backend vs cp -----------------------------------------------------------------
        local = open_blob_store(f"file://{work / 'store'}")
        file_up = timed(lambda: upload_file(local, source, digest, size))
        cp_up = timed(lambda: shutil.copyfile(source, work / "cp-up.bin"))
        cp_up_sync = cp_up + timed(lambda: subprocess.run(["sync"], check=True))
        file_down = timed(lambda: download_file(local, digest, work / "kiln-file-down.bin"))
        cp_down = timed(lambda: shutil.copyfile(work / "cp-up.bin", work / "cp-down.bin"))
        cp_down_sync = cp_down + timed(lambda: subprocess.run(["sync"], check=True))
        # kiln fsyncs what it writes, so the fair reference is cp followed by sync.
        rows += [
            ("file upload", "kiln", file_up, cp_up_sync),
            ("file upload", "cp", cp_up, None),
            ("file upload", "cp + sync", cp_up_sync, None),
            ("file download", "kiln", file_down, cp_down_sync),
            ("file download", "cp", cp_down, None),
            ("file download", "cp + sync", cp_down_sync, None),
        ]
    finally:
        stop_seaweedfs(server)
        shutil.rmtree(work, ignore_errors=True)

    print(f"\n{options.mib} MiB, {os.cpu_count()} CPUs, SeaweedFS on loopback\n")
    print(f"{'transfer':<14} {'tool':<10} {'seconds':>8} {'MB/s':>8} {'kiln/ref':>14}")
    results = []
    for what, tool, seconds, reference in rows:
        ratio = f"{seconds / reference:.2f}" if reference else ""
        print(f"{what:<14} {tool:<10} {seconds:8.2f} {size / seconds / 1e6:8.1f} {ratio:>14}")
        results.append(
            {
                "transfer": what,
                "tool": tool,
                "seconds": round(seconds, 3),
                "mb_per_s": round(size / seconds / 1e6, 1),
                "ratio_to_reference": round(seconds / reference, 3) if reference else None,
            }
        )
    sha = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "bench": "storage",
                "git_sha": sha,
                "machine": {
                    "platform": platform.platform(),
                    "cpus": os.cpu_count(),
                    "python": platform.python_version(),
                },
                "parameters": {"size_bytes": size, "part_size_bytes": 8 * 1024 * 1024, "max_concurrency": 4},
                "results": results,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"\nwrote {RESULTS.relative_to(REPO)}")


if __name__ == "__main__":
    main()
