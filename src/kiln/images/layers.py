"""The runner's local layer cache: unpacked lower dirs by diff_id, a key index, build locks.

Layout, under ``<runner state>/images/``::

    layers/<diff_id hex[:16]>/   an unpacked layer: an overlayfs lower dir (short names: the
                                 overlay mount options are one page for all layers together)
    keys/<key hex>.json          a layer record seen or made here (key → diff_id, digest, tier)
    locks/<key hex[:32]>.lock    flock: one build of a key at a time on this machine
    mounts/<id>/                 build cache mounts (per tenant, repository, image and target)
    contexts/<source hex[:16]>/  a run's source snapshot, unpacked once for copy and inputs
    tmp/                         blobs being captured or downloaded, layers being unpacked

Everything is written beside its final name and renamed into place, so a reader (another job on
this runner, another runner sharing the directory) sees a layer whole or not at all. An unchanged
image is ready after reading one small JSON file per layer and checking a directory exists.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from kiln.images.cancel import BuildCancel
from kiln.images.oci import hex_of
from kiln.images.store import LayerRecord
from kiln.images.unpack import unpack_layer

__all__ = ["LayerCache"]

_TIER_ORDER = ("protected", "branch", "pull_request", "fork_pull_request")


def _rank(tier: str) -> int:
    return _TIER_ORDER.index(tier) if tier in _TIER_ORDER else len(_TIER_ORDER)


def may_read(reader_tier: str, writer_tier: str) -> bool:
    """Whether a build of ``reader_tier`` may use a layer a build of ``writer_tier`` made.

    The same rule as :meth:`kiln.scheduler.trust.TrustTier.may_read_from` (the runner may not
    import the scheduler); an unknown tier is trusted least of all.
    """
    return _rank(writer_tier) <= _rank(reader_tier) and writer_tier in _TIER_ORDER


class LayerCache:
    """The local cache of one runner (or of the CLI, which uses the runner's directory).

    Parameters
    ----------
    root
        ``<runner state>/images``.
    """

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()  # absolute: layer paths go into overlay mount options
        self.tmp = self.root / "tmp"
        for sub in ("layers", "keys", "locks", "mounts", "contexts", "tmp"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        # Build steps run as real root with CAP_CHOWN and CAP_FSETID: a layer or a cache mount may
        # hold a setuid-root file of the workflow's choosing. Only the runner (root) may reach them.
        os.chmod(self.root, 0o700)

    # -- records --------------------------------------------------------------------------------

    def _key_file(self, key: str) -> Path:
        return self.root / "keys" / f"{hex_of(key)}.json"

    def record(self, key: str, *, reader_tier: str) -> LayerRecord | None:
        """The record of ``key`` known here, if a build of ``reader_tier`` may use it."""
        try:
            data = json.loads(self._key_file(key).read_text())
        except (OSError, ValueError):
            return None
        record = LayerRecord.from_json(data)
        return record if may_read(reader_tier, record.trust_tier) else None

    def remember(self, record: LayerRecord) -> None:
        """Keep ``record``; a more trusted record of the same key replaces a less trusted one."""
        current = self.record(record.key, reader_tier="fork_pull_request")
        if current is not None and _rank(current.trust_tier) <= _rank(record.trust_tier):
            return
        path = self._key_file(record.key)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
        tmp.write_text(json.dumps(record.to_json(), sort_keys=True))
        os.replace(tmp, path)

    # -- unpacked layers ------------------------------------------------------------------------

    def layer_dir(self, diff_id: str) -> Path:
        return self.root / "layers" / hex_of(diff_id)[:16]

    def has_layer(self, diff_id: str) -> bool:
        return self.layer_dir(diff_id).is_dir()

    def install(self, diff_id: str, blob: Path, media_type: str) -> Path:
        """Unpack ``blob`` as the lower dir of ``diff_id`` (verified), unless it is there already."""
        final = self.layer_dir(diff_id)
        if final.is_dir():
            return final
        staging = Path(tempfile.mkdtemp(prefix="layer-", dir=self.tmp))
        try:
            with blob.open("rb") as source:
                unpack_layer(source, media_type, staging, diff_id=diff_id)
            os.chmod(staging, 0o755)
            try:
                staging.rename(final)
            except OSError:
                if not final.is_dir():  # lost a race only if the winner's layer is there
                    raise
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        return final

    def fetch(self, record: LayerRecord, download: Callable[[str, Path], None]) -> Path:
        """The lower dir of ``record``, downloading and unpacking its blob if needed."""
        if self.has_layer(record.diff_id):
            return self.layer_dir(record.diff_id)
        blob = self.tmp / f"download-{hex_of(record.digest)[:16]}-{secrets.token_hex(4)}"
        try:
            download(record.digest, blob)
            return self.install(record.diff_id, blob, record.media_type)
        finally:
            blob.unlink(missing_ok=True)

    # -- locks, scratch and contexts --------------------------------------------------------------

    @contextlib.contextmanager
    def key_lock(self, key: str, cancel: BuildCancel, what: str) -> Iterator[None]:
        """Hold the build of ``key`` on this machine; a second builder waits here.

        Raises
        ------
        BuildCancelled
            The build was cancelled while it waited (``what`` names the layer).
        """
        path = self.root / "locks" / f"{hex_of(key)[:32]}.lock"
        with path.open("a") as handle:
            cancel.flock(handle, what)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def scratch(self, prefix: str) -> Iterator[Path]:
        """A private directory under ``tmp/``, removed afterwards."""
        path = Path(tempfile.mkdtemp(prefix=prefix, dir=self.tmp))
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    def context(self, source_digest: str, unpack: Callable[[Path], None]) -> Path:
        """A run's source snapshot, unpacked once (``unpack(dest)`` fills a fresh ``dest``)."""
        final = self.root / "contexts" / hex_of(source_digest)[:16]
        if final.is_dir():
            return final
        staging = self.tmp / f"context-{secrets.token_hex(6)}"
        try:
            unpack(staging)
            try:
                staging.rename(final)
            except OSError:
                if not final.is_dir():
                    raise
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        return final

    def mount_dir(self, mount_id: str) -> Path:
        path = self.root / "mounts" / mount_id
        path.mkdir(parents=True, exist_ok=True)
        return path
