"""The ``kiln`` command line.

Exit codes: 0 success, 1 a job failed, 2 usage or invalid workflow, 3 infrastructure.
"""

from kiln.cli.main import main

__all__ = ["main"]
