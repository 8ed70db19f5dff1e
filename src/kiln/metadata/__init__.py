"""kiln's metadata: the SQL database that is the single source of truth for visibility.

SQL lives only in this package. ``tables`` holds the schema (with Alembic revisions in
``migrations/``), and one module per aggregate holds its statements, one function per operation,
each taking a SQLAlchemy ``Session`` and returning frozen records: ``runs``, ``jobs``, ``attempts``,
``leases``, ``logs`` and ``events``. ``db.Database`` opens SQLite or PostgreSQL and migrates it.
Higher layers (``kiln.scheduler``) decide *which* state changes happen; this package makes each one
a guarded statement.
"""

from kiln.metadata.db import Database
from kiln.metadata.records import LogChunk

__all__ = ["Database", "LogChunk"]
