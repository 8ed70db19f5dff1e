"""Deterministic tar+zstd archives: the one format kiln packs sources, caches and artifacts in."""

from kiln.archive.tarzst import (
    ARCHIVE_FORMAT,
    CLAMPED_MTIME,
    ArchiveInfo,
    UnsafeArchive,
    pack,
    pack_members,
    unpack,
)

__all__ = [
    "ARCHIVE_FORMAT",
    "CLAMPED_MTIME",
    "ArchiveInfo",
    "UnsafeArchive",
    "pack",
    "pack_members",
    "unpack",
]
