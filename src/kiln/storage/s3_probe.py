"""Learn what an S3-compatible server really does, once per endpoint, bucket and prefix.

S3-compatible servers differ exactly where kiln's safety arguments lean on them: conditional
writes (``If-None-Match: *``), server-side sha256 checks and lifecycle rules. Their documentation
is not evidence, so the S3 backend asks the server itself at open time, with a few requests
on throwaway keys under ``<prefix>/.kiln-probe/``, and caches the answer for the process.

Measured on SeaweedFS 4.48 (``tests/contract/storage`` asserts it): all three conditional and
checksum probes pass, and the lifecycle rule is stored (whether SeaweedFS enforces it is not
observable in a test; kiln's janitor never relies on it).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import threading
import uuid
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from kiln.storage.base import Capabilities
from kiln.storage.s3_errors import error_code, translate

__all__ = ["LIFECYCLE_RULE_ID", "install_lifecycle_backstop", "probe_capabilities"]

logger = logging.getLogger(__name__)

LIFECYCLE_RULE_ID = "kiln-abort-incomplete-uploads"

_CACHE: dict[tuple[str, str, str], Capabilities] = {}
_CACHE_LOCK = threading.Lock()
_BODY = b"kiln capability probe\n"


def probe_capabilities(
    client: Any, bucket: str, prefix: str, *, endpoint: str, lifecycle_days: int | None
) -> Capabilities:
    """Return the server's capabilities, probing on first use (cached per process).

    Parameters
    ----------
    client
        A boto3 S3 client for the server.
    bucket, prefix
        Where the store lives; probe keys go under ``<prefix>/.kiln-probe/``.
    endpoint
        The endpoint URL (part of the cache key).
    lifecycle_days
        Install the abort-incomplete-uploads backstop with this many days; None skips it.
    """
    cache_key = (endpoint, bucket, prefix)
    with _CACHE_LOCK:
        if cache_key in _CACHE:
            return _CACHE[cache_key]
    base = f"{prefix}/.kiln-probe/{uuid.uuid4().hex}" if prefix else f".kiln-probe/{uuid.uuid4().hex}"
    try:
        capabilities = Capabilities(
            conditional_create=_probe_conditional_put(client, bucket, f"{base}/put"),
            conditional_complete=_probe_conditional_complete(client, bucket, f"{base}/mpu"),
            server_verifies_sha256=_probe_sha256(client, bucket, f"{base}/sha"),
            verifies_multipart_digest=False,  # S3 cannot check a whole-object sha256 of a multipart upload
            lifecycle_backstop=(
                None
                if lifecycle_days is None
                else install_lifecycle_backstop(client, bucket, prefix, days=lifecycle_days)
            ),
        )
    except (ClientError, BotoCoreError, OSError) as exc:
        raise translate(exc, f"capability probe in bucket {bucket}") from exc
    finally:
        for suffix in ("put", "mpu", "sha"):
            _delete_quietly(client, bucket, f"{base}/{suffix}")
    logger.info(
        "Probed the S3 server's capabilities.",
        extra={"action": "s3_probe", "endpoint": endpoint, "bucket": bucket, **capabilities.__dict__},
    )
    with _CACHE_LOCK:
        _CACHE[cache_key] = capabilities
    return capabilities


def _probe_conditional_put(client: Any, bucket: str, key: str) -> bool:
    client.put_object(Bucket=bucket, Key=key, Body=_BODY)
    try:
        client.put_object(Bucket=bucket, Key=key, Body=_BODY, IfNoneMatch="*")
    except ClientError as exc:
        code, status = error_code(exc)
        if status == 412:
            return True
        if status in (400, 501) or code == "NotImplemented":
            return False  # the server refuses the header itself: kiln will not send it
        raise
    return False  # the second write went through: the header is ignored


def _probe_conditional_complete(client: Any, bucket: str, key: str) -> bool:
    client.put_object(Bucket=bucket, Key=key, Body=_BODY)
    upload_id = client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    try:
        etag = client.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=1, Body=_BODY)[
            "ETag"
        ]
        client.complete_multipart_upload(
            Bucket=bucket,
            Key=key,
            UploadId=upload_id,
            MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]},
            IfNoneMatch="*",
        )
    except ClientError as exc:
        code, status = error_code(exc)
        if status == 412:
            return True
        if status in (400, 501) or code == "NotImplemented":
            return False
        raise
    finally:
        with contextlib.suppress(ClientError):  # completed (not conditional) or already gone
            client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
    return False


def _probe_sha256(client: Any, bucket: str, key: str) -> bool:
    right = base64.b64encode(hashlib.sha256(_BODY).digest()).decode()
    wrong = base64.b64encode(hashlib.sha256(b"not the body").digest()).decode()
    try:
        # The right checksum must be accepted, or a 400 below could mean "unsupported header".
        client.put_object(Bucket=bucket, Key=key, Body=_BODY, ChecksumSHA256=right)
    except ClientError as exc:
        if error_code(exc)[1] in (400, 501):
            return False
        raise
    try:
        client.put_object(Bucket=bucket, Key=f"{key}-wrong", Body=_BODY, ChecksumSHA256=wrong)
    except ClientError as exc:
        if error_code(exc)[1] == 400:
            return True
        raise
    _delete_quietly(client, bucket, f"{key}-wrong")
    return False  # stored despite the wrong checksum: the header is ignored


def install_lifecycle_backstop(client: Any, bucket: str, prefix: str, *, days: int) -> bool:
    """Add an AbortIncompleteMultipartUpload rule for ``<prefix>/blobs/``; keep the bucket's other rules.

    A backstop only: kiln's janitor aborts abandoned uploads itself, and some servers store the
    rule without enforcing it (MinIO ignores it). Returns False if the server refuses lifecycle
    configuration; never raises for that.
    """
    rule_prefix = f"{prefix}/blobs/" if prefix else "blobs/"
    try:
        try:
            rules = client.get_bucket_lifecycle_configuration(Bucket=bucket).get("Rules", [])
        except ClientError as exc:
            if error_code(exc)[0] != "NoSuchLifecycleConfiguration":
                raise
            rules = []
        for rule in rules:
            if rule.get("ID") == LIFECYCLE_RULE_ID and rule.get("Filter", {}).get("Prefix") == rule_prefix:
                return True
        ours = {
            "ID": LIFECYCLE_RULE_ID,
            "Status": "Enabled",
            "Filter": {"Prefix": rule_prefix},
            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": days},
        }
        # put_bucket_lifecycle_configuration replaces the whole configuration: keep the others.
        others = [rule for rule in rules if rule.get("ID") != LIFECYCLE_RULE_ID]
        client.put_bucket_lifecycle_configuration(
            Bucket=bucket, LifecycleConfiguration={"Rules": [*others, ours]}
        )
    except ClientError as exc:
        logger.info(
            "The S3 server refused the lifecycle backstop; the janitor alone aborts abandoned uploads.",
            extra={"action": "s3_lifecycle_refused", "bucket": bucket, "code": error_code(exc)[0]},
        )
        return False
    return True


def _delete_quietly(client: Any, bucket: str, key: str) -> None:
    try:
        client.delete_object(Bucket=bucket, Key=key)
    except (ClientError, BotoCoreError, OSError):
        logger.warning(
            "Could not delete a capability-probe object.",
            extra={"action": "s3_probe_cleanup_failed", "bucket": bucket, "key": key},
        )
