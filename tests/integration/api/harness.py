"""A served control plane with two tenants, their tokens, a registered runner and helpers.

Everything goes over HTTP, as a remote client or runner would do it: :class:`ControlPlaneClient`
for calls that should succeed, :func:`status` (raw ``httpx``) for answers a test inspects.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from kiln.api.access_models import TokenCreateIn
from kiln.api.app import create_app
from kiln.api.models import LeaseOut, RunContextIn, RunOut, SubmitIn
from kiln.api.plane import ControlPlane
from kiln.api.server import BackgroundServer
from kiln.metadata.db import Database
from kiln.runner import ControlPlaneClient
from kiln.scheduler import Scheduler
from kiln.source import snapshot_source
from kiln.storage import open_blob_store

__all__ = ["ADMIN", "LEASE_TTL_S", "WORKFLOW", "Clock", "Served", "serve", "status"]

ADMIN = "kiln_adm_test-admin-token"
LEASE_TTL_S = 30.0
WORKFLOW = """
name: two
jobs:
  build:
    image: busybox
    steps:
      - run: echo build
  test:
    image: busybox
    steps:
      - run: echo test
"""


class Clock:
    """The server's clock: real time plus whatever the test adds."""

    def __init__(self) -> None:
        import time

        self._time = time.time
        self.offset = 0.0

    def __call__(self) -> float:
        return self._time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


@dataclass
class Served:
    url: str
    plane: ControlPlane
    clock: Clock
    tmp: Path
    tokens: dict[str, str] = field(default_factory=dict)  # name → secret
    token_ids: dict[str, str] = field(default_factory=dict)

    def client(self, token: str | None) -> ControlPlaneClient:
        return ControlPlaneClient(self.url, token, retry_deadline_s=5)

    @property
    def admin(self) -> ControlPlaneClient:
        return self.client(ADMIN)

    def user(self, tenant: str) -> ControlPlaneClient:
        return self.client(self.tokens[f"user:{tenant}"])

    def mint(self, name: str, **body: Any) -> str:
        created = self.admin.create_token(TokenCreateIn(name=name, **body))
        self.tokens[name], self.token_ids[name] = created.token, created.token_id
        return created.token

    def submit(self, tenant: str, *, repo: str = "web", files: dict[str, str] | None = None) -> RunOut:
        """Upload a source (as the tenant's user) and submit the two-job workflow on it."""
        client = self.user(tenant)
        root = self.tmp / f"src-{tenant}-{uuid.uuid4().hex[:8]}"
        root.mkdir(parents=True)
        (root / "kiln.yml").write_text(WORKFLOW)
        for name, text in (files or {}).items():
            (root / name).write_text(text)
        snap = snapshot_source(root, self.tmp / "spool")
        client.upload_source(snap.info.digest, snap.archive)
        return client.submit(
            SubmitIn(
                context=RunContextIn(tenant=tenant, repo=repo),
                workflow_text=WORKFLOW,
                source_digest=snap.info.digest,
            )
        )

    def source_of(self, run_id: str) -> str:
        """The source digest a run names (the API's run view does not show it)."""
        from sqlalchemy import text

        with self.plane.scheduler.db.read_session() as session:
            query = text("SELECT source_digest FROM runs WHERE id = :id")
            return session.execute(query, {"id": run_id}).scalar_one()

    def runner(
        self, name: str = "runner-1", registration: str = "registration"
    ) -> tuple[ControlPlaneClient, str]:
        """Register a runner with a registration token; its client and id."""
        registered = self.client(self.tokens[registration]).register_runner(name, ["linux"])
        return self.client(registered.token), registered.runner_id

    def lease(self, runner: ControlPlaneClient, runner_id: str, run_id: str | None = None) -> LeaseOut:
        lease = runner.lease(runner_id, run_id=run_id)
        assert lease is not None, "nothing to lease"
        return lease


def status(
    served: Served, method: str, path: str, *, token: str | None = None, lease: str | None = None, **kw: Any
) -> httpx.Response:
    """The raw answer to one request (no retries, no translation into errors)."""
    headers = dict(kw.pop("headers", {}))
    if token == "Basic":  # another scheme than bearer
        headers["Authorization"] = "Basic dXNlcjpwYXNz"
    elif token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if lease is not None:
        headers["X-Kiln-Lease"] = lease
    return httpx.request(method, served.url + path, headers=headers, timeout=10, **kw)


@contextmanager
def serve(database_url: str, tmp: Path) -> Iterator[Served]:
    """Serve a control plane on ``database_url`` with two tenants (acme, globex) and their tokens."""
    clock = Clock()
    db = Database(database_url)
    plane = ControlPlane(
        scheduler=Scheduler(db, clock=clock, lease_ttl_s=LEASE_TTL_S),
        blobs=open_blob_store((tmp / "blobs").as_uri()),
        spool_dir=tmp / "server-spool",
        api_token=ADMIN,
        require_auth=True,
    )
    try:
        with BackgroundServer(create_app(plane)) as server:
            served = Served(server.url, plane, clock, tmp)
            for tenant in ("acme", "globex"):
                served.admin.create_tenant(tenant)
                served.mint(f"user:{tenant}", tenant=tenant, scopes=["read", "write", "tokens"])
            served.mint("registration", kind="registration")
            yield served
    finally:
        db.dispose()
