"""Alembic environment for kiln's metadata schema.

kiln has no ``alembic.ini``: :meth:`kiln.metadata.db.Database.migrate` builds the configuration in
code and passes an open connection, already inside a transaction that holds the migration lock, as
``config.attributes["connection"]``. Running ``alembic`` from a shell is therefore not supported;
call ``Database(url).migrate()``.
"""

from __future__ import annotations

from alembic import context

from kiln.metadata.tables import Base

connection = context.config.attributes.get("connection")
if connection is None or context.is_offline_mode():
    raise RuntimeError("kiln's migrations run through kiln.metadata.db.Database.migrate(), online only")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    compare_type=True,
    # SQLite cannot ALTER most things in place; batch mode rebuilds the table instead.
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
