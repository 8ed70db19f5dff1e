"""A kiln fleet in processes: one ``kiln server`` and any number of ``kiln runner``s.

Everything is the real program (``python -m kiln``), talking HTTP; each process has its own
KILN_HOME and writes its log lines to a file the test can read (and that a failing test prints).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx

from kiln.api.access_models import TokenCreateIn
from kiln.api.models import RunContextIn, RunOut, SubmitIn
from kiln.runner import ControlPlaneClient
from kiln.source import snapshot_source

__all__ = ["ADMIN", "FINAL", "Fleet", "free_port", "wait_for"]

ADMIN = "kiln_adm_e2e-admin"
FINAL = {"success", "failed", "error", "cancelled"}
KILN = [sys.executable, "-m", "kiln"]
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate: Callable[[], T], timeout: float, what: str, every: float = 0.1) -> T:
    """Poll ``predicate`` until it returns something true; that value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


class Fleet:
    """``kiln server`` on ``database_url`` (file blobs under ``tmp``), runners started on demand."""

    def __init__(
        self,
        tmp: Path,
        database_url: str,
        *,
        lease_ttl_s: float = 10.0,
        server_args: tuple[str, ...] = (),
        tenants: tuple[str, ...] = ("acme", "globex", "initech"),
    ) -> None:
        self.tmp = tmp
        self.database_url = database_url
        self.lease_ttl_s = lease_ttl_s
        self.server_args = server_args
        self.tenants = tenants
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server: subprocess.Popen[bytes] | None = None
        self.runners: dict[str, subprocess.Popen[bytes]] = {}
        self.user_tokens: dict[str, str] = {}
        self.registration = ""

    # -- processes ---------------------------------------------------------------------------------

    def _env(self, home: Path) -> dict[str, str]:
        return {**os.environ, "KILN_HOME": str(home)}

    def _log(self, name: str) -> Path:
        return self.tmp / f"{name}.log"

    def start_server(self) -> None:
        home = self.tmp / "server-home"
        args = [
            *KILN,
            "server",
            "--database-url",
            self.database_url,
            "--storage-url",
            (self.tmp / "blobs").as_uri(),
            "--listen",
            f"127.0.0.1:{self.port}",
            "--admin-token",
            ADMIN,
            "--lease-ttl",
            str(self.lease_ttl_s),
            *self.server_args,
        ]
        with self._log("server").open("ab") as log:
            self.server = subprocess.Popen(args, env=self._env(home), stdout=log, stderr=log)
        wait_for(self.ready, 30, "the server to be ready")

    def ready(self) -> bool:
        if self.server is not None and self.server.poll() is not None:
            raise AssertionError(f"the server exited with {self.server.returncode}:\n{self.logs('server')}")
        try:
            return httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def start_runner(self, name: str, *extra: str, token: str | None = None) -> subprocess.Popen[bytes]:
        home = self.tmp / name
        args = [*KILN, "runner", "--server", self.url, "--token", token or self.registration, "--name", name]
        with self._log(name).open("ab") as log:
            proc = subprocess.Popen([*args, *extra], env=self._env(home), stdout=log, stderr=log)
        self.runners[name] = proc
        return proc

    def logs(self, name: str) -> str:
        path = self._log(name)
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        for proc in [*self.runners.values(), *([self.server] if self.server else [])]:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGCONT)  # a test may have paused it
                proc.terminate()
        for proc in [*self.runners.values(), *([self.server] if self.server else [])]:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def __enter__(self) -> Fleet:
        try:
            self.start_server()
            admin = self.admin
            for tenant in self.tenants:
                admin.create_tenant(tenant)
                self.user_tokens[tenant] = admin.create_token(TokenCreateIn(tenant=tenant, name="e2e")).token
            self.registration = admin.create_token(TokenCreateIn(kind="registration", name="fleet")).token
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        self.stop()
        if exc_type is not None:  # show what the processes said
            for name in ["server", *self.runners]:
                sys.stderr.write(f"\n----- {name} -----\n{self.logs(name)[-6000:]}")

    # -- the API -----------------------------------------------------------------------------------

    @property
    def admin(self) -> ControlPlaneClient:
        return ControlPlaneClient(self.url, ADMIN, retry_deadline_s=30)

    def user(self, tenant: str) -> ControlPlaneClient:
        return ControlPlaneClient(self.url, self.user_tokens[tenant], retry_deadline_s=30)

    def submit(
        self, tenant: str, workflow: str, *, repo: str = "app", files: dict[str, str] | None = None
    ) -> RunOut:
        """Upload a source with ``workflow`` (and ``files``) as the tenant's user, and submit it."""
        root = self.tmp / "sources" / f"{tenant}-{repo}-{time.monotonic_ns()}"
        root.mkdir(parents=True)
        (root / "kiln.yml").write_text(workflow)
        for name, text in (files or {}).items():
            (root / name).write_text(text)
        client = self.user(tenant)
        snap = snapshot_source(root, self.tmp / "spool")
        client.upload_source(snap.info.digest, snap.archive)
        return client.submit(
            SubmitIn(
                context=RunContextIn(tenant=tenant, repo=repo),
                workflow_text=workflow,
                source_digest=snap.info.digest,
            )
        )

    def wait_final(self, run_id: str, timeout: float = 120) -> RunOut:
        admin = self.admin
        return wait_for(
            lambda: (run := admin.get_run(run_id)).status in FINAL and run, timeout, f"run {run_id} to end"
        )
