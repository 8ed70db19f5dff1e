"""The source of a run: a content-addressed snapshot of the repository's working tree."""

from kiln.source.snapshot import Snapshot, list_source_files, snapshot_source

__all__ = ["Snapshot", "list_source_files", "snapshot_source"]
