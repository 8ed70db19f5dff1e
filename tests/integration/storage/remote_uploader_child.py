"""Upload one file with the runner's ``RemoteBlobs`` in its own process, reporting every finished part.

Used by ``test_remote_blobs_resume.py``, which SIGKILLs this process part-way and runs it again.
Argument: one JSON object with ``server``, ``api_token``, ``attempt_id``, ``lease_token``, ``path``,
``digest``, ``size``, ``spool`` and optionally ``bandwidth`` (bytes/s). Output: ``part <n>
uploaded|resumed`` per part, then ``result <BlobUpload as JSON>``.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict

from kiln.runner.blobs import RemoteBlobs
from kiln.runner.client import ControlPlaneClient
from kiln.storage import Progress, TransferConfig


def main() -> None:
    args = json.loads(sys.argv[1])
    client = ControlPlaneClient(args["server"], args["api_token"])
    blobs = RemoteBlobs(
        client,
        args["attempt_id"],
        args["lease_token"],
        args["spool"],
        config=TransferConfig(max_bandwidth_bytes_s=args.get("bandwidth"), max_concurrency=2),
    )

    def report(progress: Progress) -> None:
        print(f"part {progress.part_number} {'resumed' if progress.resumed else 'uploaded'}", flush=True)

    result = blobs.upload(args["path"], digest=args["digest"], size=args["size"], progress=report)
    print("result " + json.dumps(asdict(result)), flush=True)


if __name__ == "__main__":
    main()
