"""The janitor reclaims what the dead left behind: expired leases (and, later, uploads and blobs)."""

from kiln.janitor.loop import JanitorLoop

__all__ = ["JanitorLoop"]
