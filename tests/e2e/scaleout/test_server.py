"""``kiln server`` as an operator starts it: migrations, the first admin token, health, JSON logs.

And what happens when it cannot start: an unreachable database is a clear error with exit 3.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import httpx
from tests.e2e.scaleout.fleet import free_port, wait_for

from kiln.metadata.db import Database
from kiln.runner import ControlPlaneClient

KILN = [sys.executable, "-m", "kiln"]


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("KILN_ADMIN_TOKEN", "KILN_DATABASE_URL")}
    return {**env, "KILN_HOME": str(home)}


def test_an_unreachable_database_stops_the_start_with_exit_3(tmp_path: Path):
    url = f"postgresql+psycopg://kiln:secret-password@127.0.0.1:{free_port()}/kiln"
    done = subprocess.run(
        [*KILN, "server", "--database-url", url, "--listen", f"127.0.0.1:{free_port()}"],
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 3
    assert "metadata database postgresql+psycopg://kiln:***@127.0.0.1" in done.stderr
    assert "unavailable" in done.stderr
    assert "secret-password" not in done.stderr


def test_migrate_then_serve_with_a_first_admin_token_health_and_json_logs(
    empty_database_url: str, tmp_path: Path
):
    home = tmp_path / "home"
    # An old schema stops a start that may not migrate, naming the command that fixes it.
    port = free_port()
    serve = [*KILN, "server", "--database-url", empty_database_url, "--listen", f"127.0.0.1:{port}"]
    refused = subprocess.run(
        [*serve, "--no-migrate"], env=_env(home), capture_output=True, text=True, timeout=60
    )
    assert refused.returncode == 3 and "kiln server migrate" in refused.stderr

    migrated = subprocess.run(
        [*KILN, "server", "migrate", "--database-url", empty_database_url],
        env=_env(home),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert migrated.returncode == 0, migrated.stderr
    db = Database(empty_database_url)
    assert db.schema_revision() == Database.head_revision()
    db.dispose()

    log_path = tmp_path / "server.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen([*serve, "--no-migrate"], env=_env(home), stdout=log, stderr=log)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: _status(f"{url}/readyz") == 200, 30, "the server to be ready")
        assert _status(f"{url}/healthz") == 200
        assert httpx.get(f"{url}/readyz").json()["checks"] == {"database": "ok", "storage": "ok"}
        # No admin token given: the first start made one, readable by the owner only.
        token_file = home / "admin-token"
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        admin = ControlPlaneClient(url, token_file.read_text().strip())
        assert admin.whoami().kind == "admin"
        assert _status(f"{url}/v1/runs") == 401
    finally:
        server.terminate()
        server.wait(15)
    lines = [line for line in log_path.read_text().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert {"ts", "level", "logger", "message"} <= set(records[0])
    assert any(r.get("action") == "admin_token_created" for r in records)
    assert any(r.get("action") == "server_started" for r in records)
    assert not any(token_file.read_text().strip() in line for line in lines)  # the secret is not logged

    # A second start finds an admin token and makes no other.
    with log_path.open("wb") as log:
        again = subprocess.Popen(serve, env=_env(home), stdout=log, stderr=log)
    try:
        wait_for(lambda: _status(f"http://127.0.0.1:{port}/readyz") == 200, 30, "the server to be ready")
    finally:
        again.terminate()
        again.wait(15)
    assert "admin_token_created" not in log_path.read_text()


def _status(url: str) -> int:
    try:
        return httpx.get(url, timeout=2).status_code
    except httpx.HTTPError:
        return 0
