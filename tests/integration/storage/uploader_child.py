"""Run ``upload_file`` in its own process, reporting every finished part on stdout.

Used by ``test_storage_resume.py``: the test SIGKILLs this process part-way through an upload,
then runs it again to resume. Argument: one JSON object with ``url``, ``path``, ``digest``,
``size``, ``spool`` and optionally ``bandwidth`` (bytes/s). Credentials come from the environment.
Output: ``part <n> uploaded|resumed`` per part, then ``result <UploadResult as JSON>``.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict

from kiln.storage import JsonFileJournal, Progress, TransferConfig, open_blob_store, upload_file


def main() -> None:
    args = json.loads(sys.argv[1])
    store = open_blob_store(args["url"])

    def report(progress: Progress) -> None:
        print(f"part {progress.part_number} {'resumed' if progress.resumed else 'uploaded'}", flush=True)

    result = upload_file(
        store,
        args["path"],
        args["digest"],
        args["size"],
        config=TransferConfig(max_bandwidth_bytes_s=args.get("bandwidth")),
        journal=JsonFileJournal(args["spool"]),
        progress=report,
    )
    print("result " + json.dumps(asdict(result)), flush=True)


if __name__ == "__main__":
    main()
