"""``BlobPolicy``: how long grants and upload sessions last, and when the janitor may clean up.

One value shared by the control plane's blob endpoints and the janitor, so the rule "the grace
period is longer than any upload session" can be checked in one place.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from kiln.errors import UsageError
from kiln.storage.config import TransferConfig

__all__ = ["BlobPolicy"]

_HOUR = 3600.0


@dataclass(frozen=True)
class BlobPolicy:
    """Attributes
    ----------
    grant_ttl_s
        Lifetime of one grant (a presigned or HMAC-signed URL). Holders renew them as they go.
    upload_lease_s
        An open upload session's lease; every call of its holder extends it. The janitor aborts a
        session whose lease expired once its attempt is no longer running.
    transfer
        Part size and single-put threshold the control plane plans uploads with.
    blob_grace_s
        An unreferenced blob younger than this is kept (it may be about to be referenced).
    abandoned_upload_s
        A multipart upload no session knows of is aborted once it is this old.
    session_retention_s
        Ended sessions are kept this long (they answer "who uploaded this"), then purged.
    gc_interval_s
        How often the server's janitor collects storage garbage.
    """

    grant_ttl_s: int = 900
    upload_lease_s: float = 900.0
    transfer: TransferConfig = field(default_factory=TransferConfig)
    blob_grace_s: float = 24 * _HOUR
    abandoned_upload_s: float = 24 * _HOUR
    session_retention_s: float = 7 * 24 * _HOUR
    gc_interval_s: float = 600.0

    def __post_init__(self) -> None:
        problems = []
        if self.grant_ttl_s < 1:
            problems.append(f"grant_ttl_s must be >= 1, not {self.grant_ttl_s}")
        if self.upload_lease_s <= 0:
            problems.append(f"upload_lease_s must be > 0, not {self.upload_lease_s}")
        if self.blob_grace_s < self.upload_lease_s:
            problems.append(
                f"blob_grace_s ({self.blob_grace_s}) must be at least upload_lease_s "
                f"({self.upload_lease_s}): a blob must outlive the session that may still reference it"
            )
        if self.abandoned_upload_s < self.upload_lease_s:
            problems.append(
                f"abandoned_upload_s ({self.abandoned_upload_s}) must be at least upload_lease_s "
                f"({self.upload_lease_s})"
            )
        if self.session_retention_s < self.blob_grace_s:
            problems.append(
                f"session_retention_s ({self.session_retention_s}) must be at least blob_grace_s "
                f"({self.blob_grace_s})"
            )
        if self.gc_interval_s <= 0:
            problems.append(f"gc_interval_s must be > 0, not {self.gc_interval_s}")
        if problems:
            raise UsageError("invalid blob policy: " + "; ".join(problems))

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> BlobPolicy:
        """Read the policy's settings from ``KILN_*`` variables in ``environ`` (unset: the default).

        ``KILN_GRANT_TTL_S``, ``KILN_UPLOAD_LEASE_S``, ``KILN_BLOB_GRACE_S``,
        ``KILN_ABANDONED_UPLOAD_S``, ``KILN_UPLOAD_SESSION_RETENTION_S``, ``KILN_GC_INTERVAL_S``.
        """
        values: dict[str, float] = {}
        for name, variable in _ENV.items():
            raw = environ.get(variable, "").strip()
            if not raw:
                continue
            try:
                values[name] = float(raw)
            except ValueError:
                raise UsageError(f"{variable}={raw!r} is not a number of seconds") from None
        if "grant_ttl_s" in values:
            values["grant_ttl_s"] = int(values["grant_ttl_s"])
        return cls(**values)  # type: ignore[arg-type]


_ENV = {
    "grant_ttl_s": "KILN_GRANT_TTL_S",
    "upload_lease_s": "KILN_UPLOAD_LEASE_S",
    "blob_grace_s": "KILN_BLOB_GRACE_S",
    "abandoned_upload_s": "KILN_ABANDONED_UPLOAD_S",
    "session_retention_s": "KILN_UPLOAD_SESSION_RETENTION_S",
    "gc_interval_s": "KILN_GC_INTERVAL_S",
}
