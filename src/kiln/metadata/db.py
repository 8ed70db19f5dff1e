"""The metadata database: one engine, its sessions, and its migrations, on SQLite or PostgreSQL.

SQLite is the embedded default (one file under ``KILN_HOME``, shared by every ``kiln`` process on
the machine); PostgreSQL is for a fleet. The differences the rest of kiln must not see are settled
here and in ``leases.lease_next_job``:

* SQLite allows one writer at a time. Every write transaction starts with ``BEGIN IMMEDIATE``, which
  takes the write lock up front (waiting up to ``busy_timeout``). A deferred transaction that reads
  first and writes later can fail at once with "database is locked" when another connection wrote
  in between, and no timeout helps then. Read-only sessions stay deferred: in WAL mode readers never
  block the writer.
* PostgreSQL runs at READ COMMITTED; guarded ``UPDATE``s and row locks decide races (see
  ``leases.py`` for the lock order).

Driver errors are translated here, once, into :class:`~kiln.errors.DatabaseUnavailable`, whose
message names the database without its password.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, select
from sqlalchemy import exc as sa_exc
from sqlalchemy import func as sql_func
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.orm import Session, sessionmaker

from kiln.errors import DatabaseUnavailable, UsageError

__all__ = ["MIGRATIONS_DIR", "Database"]

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"

# How long a SQLite writer waits for the lock before "database is locked". Long, because the
# alternative is a failed job: transactions here are short, a wait is a queue, not a deadlock.
SQLITE_BUSY_TIMEOUT_S = 30.0
# An arbitrary constant: the PostgreSQL advisory lock that serialises concurrent migrations.
_MIGRATION_LOCK_KEY = 0x6B696C6E  # "kiln"
# Execution option marking a connection whose transactions only read (no BEGIN IMMEDIATE).
_READ_ONLY = "kiln_read_only"


class Database:
    """The metadata database at ``url``.

    Parameters
    ----------
    url
        ``sqlite:///path/to/kiln.db`` or ``postgresql+psycopg://user@host:5432/name``
        (``postgresql://`` and ``postgres://`` mean psycopg 3 too). The SQLite file's directory
        must exist. Nothing connects until the first session.

    Raises
    ------
    UsageError
        The URL is malformed or names a database kiln does not support.
    """

    def __init__(self, url: str) -> None:
        self.url = _normalise_url(url)
        self.dialect: str = self.url.get_backend_name()
        if self.dialect == "sqlite":
            self._engine = _sqlite_engine(self.url)
        else:
            self._engine = create_engine(
                self.url,
                pool_pre_ping=True,
                pool_size=5,
                max_overflow=10,
                connect_args={"connect_timeout": 5, "application_name": "kiln"},
            )
        self._sessions = sessionmaker(bind=self._engine, autoflush=False, expire_on_commit=False)
        self._read_sessions = sessionmaker(
            bind=self._engine.execution_options(**{_READ_ONLY: True}),
            autoflush=False,
            expire_on_commit=False,
        )

    def __repr__(self) -> str:
        return f"Database({self.display_url!r})"

    @property
    def display_url(self) -> str:
        """The URL with its password hidden: safe for messages and logs."""
        return self.url.render_as_string(hide_password=True)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """Open a read-write transaction; commit when the block ends, roll back if it raises.

        On SQLite the transaction holds the database's write lock from its first statement.

        Raises
        ------
        DatabaseUnavailable
            The database cannot be reached or is broken (not migrated, locked past the timeout).
        """
        with self._translating_errors(), self._sessions.begin() as session:
            yield session

    @contextmanager
    def read_session(self) -> Iterator[Session]:
        """Open a transaction for queries only; it never takes SQLite's write lock.

        Raises
        ------
        DatabaseUnavailable
            As for :meth:`session`.
        """
        with self._translating_errors(), self._read_sessions.begin() as session:
            yield session

    def migrate(self) -> None:
        """Bring the schema to the newest revision (``alembic upgrade head``).

        Safe to call from several processes at once: on PostgreSQL they queue on an advisory lock,
        on SQLite on the write lock, and the later ones find the schema already at head.

        Raises
        ------
        DatabaseUnavailable
            The database cannot be reached or the migration failed.
        """
        if self.schema_revision() == self.head_revision():
            return  # the common case: skip Alembic's environment set-up (~0.4 s per command)
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        with self._translating_errors(), self._engine.begin() as connection:
            if self.dialect == "postgresql":
                # Transaction-scoped: released by the commit that also publishes the new schema.
                connection.execute(select(sql_func.pg_advisory_xact_lock(_MIGRATION_LOCK_KEY)))
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
        logger.info(
            "The metadata database is migrated.",
            extra={"action": "database_migrated", "database": self.display_url},
        )

    @staticmethod
    def head_revision() -> str:
        """The newest revision this version of kiln ships (what :meth:`migrate` brings a schema to)."""
        from alembic.script import ScriptDirectory

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        head = ScriptDirectory.from_config(config).get_current_head()
        assert head is not None, "kiln ships at least one migration"
        return head

    def schema_revision(self) -> str | None:
        """Return the Alembic revision the database is at, or ``None`` if it was never migrated."""
        from alembic.runtime.migration import MigrationContext

        with self._translating_errors(), self._engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()

    def dispose(self) -> None:
        """Close every pooled connection (e.g. before dropping a test database or after a fork)."""
        self._engine.dispose()

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine; for ``kiln.metadata`` and its tests only."""
        return self._engine

    @contextmanager
    def _translating_errors(self) -> Iterator[None]:
        try:
            yield
        except (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.ProgrammingError) as exc:
            if isinstance(exc, sa_exc.ProgrammingError) and _sqlstate(exc) != "42P01":
                raise  # a bug in a query, not an unavailable database
            raise DatabaseUnavailable(_describe(self.display_url, exc)) from exc
        except sa_exc.TimeoutError as exc:  # the connection pool stayed exhausted
            raise DatabaseUnavailable(f"metadata database {self.display_url}: {exc}") from exc


def _normalise_url(url: str) -> URL:
    try:
        parsed = make_url(url)
    except sa_exc.ArgumentError as exc:
        raise UsageError(
            f"invalid database URL {url!r}: expected sqlite:///PATH or postgresql://..."
        ) from exc
    if parsed.drivername in ("postgresql", "postgres", "postgresql+psycopg"):
        return parsed.set(drivername="postgresql+psycopg")
    if parsed.drivername in ("sqlite", "sqlite+pysqlite"):
        if parsed.database in (None, "", ":memory:"):
            raise UsageError("an in-memory SQLite database cannot be shared between connections; name a file")
        return parsed
    shown = parsed.render_as_string(hide_password=True)
    raise UsageError(f"unsupported database URL {shown}: kiln runs on sqlite:/// or postgresql://")


def _sqlite_engine(url: URL) -> Engine:
    engine = create_engine(
        url,
        connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False},
        pool_size=5,
        max_overflow=10,
    )

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
        # Let SQLAlchemy's "begin" hook below issue BEGIN; pysqlite's own implicit BEGIN is always
        # DEFERRED and would come too late for the write lock.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
            # WAL: readers and the one writer do not block each other. Persistent in the file.
            cursor.execute("PRAGMA journal_mode = WAL")
            # In WAL mode NORMAL is durable against application crashes, not power loss; the
            # embedded database holds one machine's CI history, which a power cut may shorten.
            cursor.execute("PRAGMA synchronous = NORMAL")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        read_only = connection.get_execution_options().get(_READ_ONLY, False)
        connection.exec_driver_sql("BEGIN DEFERRED" if read_only else "BEGIN IMMEDIATE")

    return engine


def _sqlstate(exc: sa_exc.DBAPIError) -> str | None:
    return getattr(exc.orig, "sqlstate", None)


def _describe(display_url: str, exc: sa_exc.DBAPIError) -> str:
    reason = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else str(exc)
    hint = ""
    if "no such table" in reason or _sqlstate(exc) == "42P01":
        hint = " (the schema is missing: run the migrations)"
    return f"metadata database {display_url} is unavailable: {reason}{hint}"
