"""``kiln gc``: expire artifacts and caches past their retention, abort abandoned uploads, delete
blobs nothing references after the grace period, and say what was done.

It works on the database and the blob store directly (``--database-url`` and ``--storage-url``, or
the local ``KILN_HOME``), so an operator can run it from cron beside the server; the server's
janitor does the same every ``KILN_GC_INTERVAL_S``. Grace periods come from the ``KILN_*`` blob
policy variables (``KILN_BLOB_GRACE_S``, ``KILN_ABANDONED_UPLOAD_S``, …).
"""

from __future__ import annotations

import json
import os

import click

from kiln import config
from kiln.sandbox.base import format_size

__all__ = ["gc_command"]


@click.command("gc")
@click.option(
    "--database-url", envvar="KILN_DATABASE_URL", default=None, help="[default: SQLite under KILN_HOME]."
)
@click.option(
    "--storage-url", envvar="KILN_STORAGE_URL", default=None, help="[default: files under KILN_HOME]."
)
@click.option("--dry-run", is_flag=True, help="Say what would be done; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
def gc_command(database_url: str | None, storage_url: str | None, dry_run: bool, as_json: bool) -> None:
    """Expire what outlived its retention and delete the storage nothing references."""
    from kiln.artifacts.gc import collect_garbage
    from kiln.metadata.db import Database
    from kiln.storage import open_blob_store
    from kiln.storage.policy import BlobPolicy

    paths = config.Paths(config.kiln_home()).ensure()
    db = Database(database_url or config.database_url(paths))
    store = open_blob_store(storage_url or config.storage_url(paths))
    try:
        db.migrate()
        policy, quota = BlobPolicy.from_env(os.environ), config.cache_quota_bytes()
        report = collect_garbage(db, store, policy, dry_run=dry_run, cache_quota_bytes=quota)
    finally:
        store.close()
        db.dispose()
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
        return
    data = report.as_dict()
    expired, storage = data["expired"], data["storage"]
    verb = "would be" if dry_run else "were"
    click.echo(
        f"retention: {expired['artifacts']} artifacts and {expired['caches']} cache entries {verb} expired"
        + (f" (and {expired['other']} other entries)" if expired["other"] else "")
    )
    for entry in expired["entries"]:
        where = (
            f"run {entry['run_id']} job {entry['job']}" if entry["kind"] == "artifact" else entry["tenant"]
        )
        why = (
            "evicted: its repository's caches are over KILN_CACHE_QUOTA, and it was used least recently"
            if entry["reason"] == "quota"
            else f"expired at {entry['expires_at']}"
        )
        click.echo(f"  {entry['kind']} {entry['name']} ({where}), {why}")
    click.echo(
        f"storage: {storage['sessions_aborted']} upload sessions ended, {storage['uploads_aborted']} "
        f"uploads aborted, {storage['blobs_deleted']} blobs deleted ({format_size(storage['bytes_freed'])} "
        f"freed), {storage['sessions_purged']} old sessions purged" + (" (dry run)" if dry_run else "")
    )
