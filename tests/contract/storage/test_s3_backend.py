"""What the S3 backend learns about SeaweedFS, and S3-only behaviour (URLs, lifecycle backstop)."""

from __future__ import annotations

import pytest
from tests.fixtures.seaweedfs import SeaweedFS

from kiln.errors import StorageRefused, UsageError
from kiln.storage import Capabilities, open_blob_store
from kiln.storage.s3_probe import LIFECYCLE_RULE_ID

pytestmark = pytest.mark.s3


def test_the_probe_records_what_seaweedfs_does(seaweedfs: SeaweedFS) -> None:
    store = open_blob_store(seaweedfs.url("probe-check"), **seaweedfs.options())

    # Measured on SeaweedFS 4.48: If-None-Match: * is honoured on PutObject and on
    # CompleteMultipartUpload (412), a wrong x-amz-checksum-sha256 is refused (BadDigest), and a
    # lifecycle configuration is accepted. S3 never hashes a multipart object as a whole.
    assert store.capabilities == Capabilities(
        conditional_create=True,
        conditional_complete=True,
        server_verifies_sha256=True,
        verifies_multipart_digest=False,
        lifecycle_backstop=True,
    )
    rules = seaweedfs.client().get_bucket_lifecycle_configuration(Bucket=seaweedfs.bucket)["Rules"]
    ours = [
        rule
        for rule in rules
        if rule["ID"] == LIFECYCLE_RULE_ID and rule["Filter"]["Prefix"] == "probe-check/blobs/"
    ]
    assert ours and ours[0]["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 1}
    # The probe cleans up after itself: nothing left under the prefix.
    listed = seaweedfs.client().list_objects_v2(Bucket=seaweedfs.bucket, Prefix="probe-check/")
    assert listed.get("KeyCount", 0) == 0


def test_the_lifecycle_backstop_keeps_other_rules(seaweedfs: SeaweedFS) -> None:
    client = seaweedfs.client()
    existing = client.get_bucket_lifecycle_configuration(Bucket=seaweedfs.bucket)["Rules"]
    other = {
        "ID": "someone-elses",
        "Status": "Enabled",
        "Filter": {"Prefix": "elsewhere/"},
        "Expiration": {"Days": 30},
    }
    client.put_bucket_lifecycle_configuration(
        Bucket=seaweedfs.bucket, LifecycleConfiguration={"Rules": [*existing, other]}
    )

    open_blob_store(seaweedfs.url("lifecycle-check"), **seaweedfs.options())

    ids = {rule["ID"] for rule in client.get_bucket_lifecycle_configuration(Bucket=seaweedfs.bucket)["Rules"]}
    assert "someone-elses" in ids and LIFECYCLE_RULE_ID in ids


def test_wrong_credentials_are_a_refusal_not_a_retryable_fault(seaweedfs: SeaweedFS) -> None:
    with pytest.raises(StorageRefused):
        open_blob_store(
            seaweedfs.url("bad-creds"), aws_access_key_id="nobody", aws_secret_access_key="wrong-secret-key"
        )


@pytest.mark.parametrize(
    "url",
    ["s3://", "s3://bucket?colour=blue", "s3://bucket?addressing=sideways&probe=0"],
)
def test_malformed_s3_urls_are_usage_errors(url: str) -> None:
    with pytest.raises(UsageError):
        open_blob_store(url)
