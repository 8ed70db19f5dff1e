"""kiln: a CI/CD platform whose cache hits never change a result."""

__version__ = "0.1.0"
