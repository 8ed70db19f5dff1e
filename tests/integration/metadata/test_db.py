"""The database itself: migrations, dialect settings, error translation, timestamps."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import exc as sa_exc
from sqlalchemy import insert, inspect, text
from tests.integration.metadata.helpers import START, FakeClock, submit

from kiln.errors import DatabaseUnavailable, UsageError
from kiln.metadata.db import Database
from kiln.metadata.ids import new_id
from kiln.metadata.tables import Attempt, Base
from kiln.scheduler import Scheduler

WORKER = Path(__file__).with_name("worker_process.py")
TABLES = {
    "tenants",
    "repositories",
    "runs",
    "jobs",
    "attempts",
    "steps",
    "log_chunks",
    "job_events",
    "runners",
    "entries",
}


def test_migrations_apply_to_an_empty_database_twice(empty_database_url: str) -> None:
    db = Database(empty_database_url)
    assert db.schema_revision() is None
    db.migrate()
    db.migrate()  # idempotent: already at head
    assert db.schema_revision() == Database.head_revision()
    assert set(inspect(db.engine).get_table_names()) >= TABLES
    db.dispose()


def test_the_migrated_schema_matches_the_mappings(database: Database) -> None:
    with database.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []


def test_two_processes_may_migrate_at_once(empty_database_url: str) -> None:
    workers = [
        subprocess.Popen(
            [sys.executable, str(WORKER), "migrate", empty_database_url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = [w.communicate(timeout=60) for w in workers]
    assert [w.returncode for w in workers] == [0, 0], [err for _, err in results]
    assert [json.loads(out) for out, _ in results] == [Database.head_revision()] * 2


def test_one_running_attempt_per_job_is_enforced_by_the_database(
    database: Database, clock: FakeClock
) -> None:
    scheduler = Scheduler(database, clock=clock)
    run = submit(scheduler, ["only"])
    leased = scheduler.lease_next("r1")
    assert leased is not None
    now = datetime.fromtimestamp(START, UTC)
    with pytest.raises(sa_exc.IntegrityError), database.session() as session:
        session.execute(
            insert(Attempt).values(
                id=new_id(now),
                job_id=run.jobs[0].job_id,
                number=99,
                runner_id="sneaky",
                lease_token="t",
                lease_expires_at=now,
                status="running",
                started_at=now,
            )
        )


def test_timestamps_come_back_as_utc_from_the_injected_clock(database: Database, clock: FakeClock) -> None:
    view = submit(Scheduler(database, clock=clock), ["only"])
    assert view.created_at == datetime.fromtimestamp(START, UTC)
    assert view.created_at.tzinfo is UTC


def test_ids_sort_by_creation_time() -> None:
    earlier, later = (new_id(datetime.fromtimestamp(t, UTC)) for t in (START, START + 0.002))
    assert len(earlier) == 26 and earlier < later


def test_sqlite_runs_in_wal_mode_with_foreign_keys_and_a_busy_timeout(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'kiln.db'}")
    with db.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 10_000
    db.dispose()


def test_an_unreachable_postgresql_is_named_without_its_password() -> None:
    db = Database("postgresql://kiln:s3cret-pw@127.0.0.1:9/kiln")
    with pytest.raises(DatabaseUnavailable) as caught:
        db.migrate()
    assert "127.0.0.1:9/kiln" in caught.value.message
    assert "s3cret-pw" not in caught.value.message
    assert "s3cret-pw" not in repr(db)
    assert isinstance(caught.value.__cause__, sa_exc.OperationalError)
    assert caught.value.exit_code == 3


def test_a_sqlite_file_in_a_missing_directory_is_unavailable(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'missing' / 'kiln.db'}")
    with pytest.raises(DatabaseUnavailable, match=re.escape("missing/kiln.db")):
        Scheduler(db).list_runs()


def test_a_database_that_was_never_migrated_says_so(empty_database_url: str) -> None:
    db = Database(empty_database_url)
    with pytest.raises(DatabaseUnavailable, match="run the migrations"):
        Scheduler(db).list_runs()
    db.dispose()


@pytest.mark.parametrize("url", ["mysql://x@y/z", "sqlite://", "sqlite:///:memory:", "not a url"])
def test_unsupported_urls_are_usage_errors(url: str) -> None:
    with pytest.raises(UsageError):
        Database(url)


def test_postgres_urls_use_psycopg_3() -> None:
    for url in ("postgresql://u@h/d", "postgres://u@h/d", "postgresql+psycopg://u@h/d"):
        assert Database(url).url.drivername == "postgresql+psycopg"


def test_read_sessions_do_not_take_the_sqlite_write_lock(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'kiln.db'}")
    db.migrate()
    with db.session() as writer, db.read_session() as reader:
        writer.execute(text("INSERT INTO tenants (name) VALUES ('w')"))
        # A reader proceeds while the writer holds the lock, and sees the last committed state.
        assert reader.execute(text("SELECT count(*) FROM tenants")).scalar() == 0
    db.dispose()
