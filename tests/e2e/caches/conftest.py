"""The cache end-to-end tests use SeaweedFS as well as the file store."""

from tests.fixtures.seaweedfs import seaweedfs  # noqa: F401 (a fixture, used by name)
