"""kiln.storage: the content-addressed blob store and the transfers in and out of it.

Open a store from a URL, then move files with :func:`upload_file` / :func:`download_file`::

    store = open_blob_store("s3://bucket/kiln?endpoint=http://127.0.0.1:8333")
    upload_file(store, path, digest, size, journal=JsonFileJournal(spool_dir))

Backends: ``file://`` (embedded default), ``s3://`` (any S3 API), ``memory://`` (tests). The
package knows nothing of the database or the domain; see ``docs/design-storage.md``.
"""

from kiln.storage.base import (
    MAX_PART_SIZE_BYTES,
    MAX_PARTS,
    MIN_PART_SIZE_BYTES,
    BlobEntry,
    BlobReader,
    BlobStore,
    Capabilities,
    PartEntry,
    UploadEntry,
    WriteOutcome,
)
from kiln.storage.cleanup import (
    abandoned_uploads,
    abort_uploads,
    delete_unreferenced_blobs,
    unreferenced_blobs,
)
from kiln.storage.config import TransferConfig
from kiln.storage.digests import digest_bytes, digest_file, is_digest
from kiln.storage.journal import JsonFileJournal, UploadJournal, UploadRecord
from kiln.storage.registry import open_blob_store
from kiln.storage.transfer import DownloadResult, Progress, UploadResult, download_file, upload_file

__all__ = [
    "MAX_PARTS",
    "MAX_PART_SIZE_BYTES",
    "MIN_PART_SIZE_BYTES",
    "BlobEntry",
    "BlobReader",
    "BlobStore",
    "Capabilities",
    "DownloadResult",
    "JsonFileJournal",
    "PartEntry",
    "Progress",
    "TransferConfig",
    "UploadEntry",
    "UploadJournal",
    "UploadRecord",
    "UploadResult",
    "WriteOutcome",
    "abandoned_uploads",
    "abort_uploads",
    "delete_unreferenced_blobs",
    "digest_bytes",
    "digest_file",
    "download_file",
    "is_digest",
    "open_blob_store",
    "unreferenced_blobs",
    "upload_file",
]
