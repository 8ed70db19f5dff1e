"""Open a blob store from a URL: the scheme picks the backend, imported only when first used.

``open_blob_store("file:///var/lib/kiln/blobs")``, ``open_blob_store("memory://")`` and
``open_blob_store("s3://bucket/prefix?endpoint=http://127.0.0.1:8333")``. Keyword options are
passed to the backend untouched (fsspec's ``filesystem(protocol, **options)`` idea). The registry
is built here and read-only: a new backend is a new line below, plus the contract suite.
"""

from __future__ import annotations

import importlib
from types import MappingProxyType
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from kiln.errors import StorageRefused, UsageError
from kiln.storage.base import BlobStore

__all__ = ["open_blob_store", "registry"]


class _Backend(NamedTuple):
    target: str  # "module:Class"
    install_hint: str | None  # shown when the import fails


registry: MappingProxyType[str, _Backend] = MappingProxyType(
    {
        "file": _Backend("kiln.storage.local:LocalBlobStore", None),
        "memory": _Backend("kiln.storage.memory:MemoryBlobStore", None),
        "s3": _Backend("kiln.storage.s3:S3BlobStore", "the s3 backend needs boto3: pip install boto3"),
    }
)


def open_blob_store(url: str, **options: Any) -> BlobStore:
    """Open the blob store that ``url`` names.

    Parameters
    ----------
    url
        ``file:///abs/path``, ``memory://[name]`` or ``s3://bucket[/prefix][?endpoint=…&region=…]``.
    **options
        Passed to the backend's ``from_url`` (for example credentials or a grant secret).

    Raises
    ------
    UsageError
        If the scheme is unknown or the URL is malformed.
    StorageRefused
        If the backend's libraries are not installed (the message says what to install).
    """
    scheme = urlsplit(url).scheme
    backend = registry.get(scheme)
    if backend is None:
        known = ", ".join(f"{name}://" for name in sorted(registry))
        raise UsageError(f"no blob store for {url!r}: unknown scheme {scheme!r} (known: {known})")
    module_name, _, class_name = backend.target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        hint = f"; {backend.install_hint}" if backend.install_hint else ""
        raise StorageRefused(f"the {scheme}:// blob store cannot be imported ({exc}){hint}") from exc
    store: BlobStore = getattr(module, class_name).from_url(url, **options)
    return store
