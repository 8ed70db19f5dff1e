"""The janitor reclaims what the dead left behind: expired leases, abandoned uploads, unreferenced blobs.

``collect_storage_garbage`` is the storage half (also what ``kiln gc`` calls); ``JanitorLoop`` runs
lease reclaiming every second and, given a ``StorageJanitor``, storage collection at its interval.
"""

from kiln.janitor.loop import JanitorLoop
from kiln.janitor.storage_gc import StorageJanitor, StorageReport, collect_storage_garbage

__all__ = ["JanitorLoop", "StorageJanitor", "StorageReport", "collect_storage_garbage"]
