"""Fixtures for the artifact end-to-end tests: the SeaweedFS server comes from the shared plugin."""

from tests.fixtures.seaweedfs import seaweedfs  # noqa: F401 (a fixture, used by name)
