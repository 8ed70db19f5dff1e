"""End-to-end image tests: the e2e ``kiln`` and ``project`` fixtures, plus a real registry."""

from tests.fixtures.registry import registry  # noqa: F401  (a fixture, used by name)
