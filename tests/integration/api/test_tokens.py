"""Tokens: 401 without a word for unknown, revoked and expired ones; stored hashed; scopes enforced."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from kiln.api.access_models import TokenCreateIn
from kiln.errors import Forbidden, NotFound, Unauthorized

from .harness import ADMIN, Served, status

UNAUTHORIZED = {"error": "Unauthorized", "message": "Missing, unknown, expired or revoked token."}


def test_a_missing_or_unknown_token_is_refused_with_401_and_nothing_else(served: Served):
    for token in (None, "Basic", "kiln_usr_no-such-token", "kiln_job_no-such-job", "garbage"):
        for method, path in [("GET", "/v1/runs"), ("GET", "/v1/tenants"), ("POST", "/v1/lease")]:
            answer = status(served, method, path, token=token, json={"runner_id": "r"})
            assert answer.status_code == 401, (token, method, path)
            assert answer.json() == UNAUTHORIZED
    # An attempt's routes without a job token, or with an unknown one.
    for lease in (None, "kiln_job_no-such-job"):
        answer = status(served, "POST", "/v1/attempts/01ABC/heartbeat", lease=lease)
        assert (answer.status_code, answer.json()) == (401, UNAUTHORIZED)


def test_a_revoked_token_is_refused_at_once(served: Served):
    token = served.mint("ci", tenant="acme")
    assert status(served, "GET", "/v1/runs", token=token).status_code == 200
    revoked = served.admin.revoke_token(served.token_ids["ci"])
    assert revoked.revoked_at is not None
    answer = status(served, "GET", "/v1/runs", token=token)
    assert (answer.status_code, answer.json()) == (401, UNAUTHORIZED)
    assert served.admin.revoke_token(served.token_ids["ci"]).revoked_at == revoked.revoked_at  # no-op


def test_an_expired_token_is_refused(served: Served):
    token = served.mint("short", tenant="acme", expires_in_s=60)
    assert status(served, "GET", "/v1/runs", token=token).status_code == 200
    served.clock.advance(61)
    answer = status(served, "GET", "/v1/runs", token=token)
    assert (answer.status_code, answer.json()) == (401, UNAUTHORIZED)


def test_only_the_hash_of_a_token_is_stored(served: Served):
    token = served.mint("ci", tenant="acme")
    run = served.submit("acme")
    runner, runner_id = served.runner()
    lease = served.lease(runner, runner_id, run.run_id)
    with served.plane.scheduler.db.read_session() as session:
        dump = "\n".join(
            str(row)
            for table in ("api_tokens", "attempts")
            for row in session.execute(text(f"SELECT * FROM {table}"))
        )
    for secret in (token, lease.lease_token, served.tokens["registration"]):
        assert secret not in dump


def test_whoami_names_the_token(served: Served):
    me = served.user("acme").whoami()
    assert (me.kind, me.tenant, me.scopes) == ("user", "acme", ["read", "tokens", "write"])
    assert served.admin.whoami().kind == "admin"
    assert served.client(served.tokens["registration"]).whoami().kind == "registration"


def test_a_read_only_token_reads_but_cannot_submit_cancel_or_upload(served: Served):
    run = served.submit("acme")
    reader = served.mint("dashboard", tenant="acme", scopes=["read"])
    assert status(served, "GET", f"/v1/runs/{run.run_id}", token=reader).status_code == 200
    assert status(served, "POST", f"/v1/runs/{run.run_id}/cancel", token=reader).status_code == 403
    digest = "sha256:" + "1" * 64
    assert status(served, "PUT", f"/v1/sources/{digest}", token=reader, content=b"x").status_code == 403
    assert status(served, "POST", "/v1/tokens", token=reader, json={"name": "x"}).status_code == 403


def test_a_tenant_manages_its_own_tokens_without_escalating(served: Served):
    acme = served.user("acme")
    reader = acme.create_token(TokenCreateIn(name="reader", scopes=["read"]))
    assert (reader.tenant, reader.scopes) == ("acme", ["read"])
    weak = served.client(served.mint("weak", tenant="acme", scopes=["read", "tokens"]))
    with pytest.raises(Forbidden):
        weak.create_token(TokenCreateIn(name="stronger", scopes=["read", "write"]))
    with pytest.raises(Forbidden):
        acme.create_token(TokenCreateIn(kind="admin", name="root"))
    with pytest.raises(NotFound):
        acme.create_token(TokenCreateIn(name="theirs", tenant="globex"))
    # Its list holds its own tenant's tokens only; another tenant's token does not exist for it.
    assert {t.tenant for t in acme.list_tokens()} == {"acme"}
    with pytest.raises(NotFound):
        acme.revoke_token(served.token_ids["user:globex"])
    acme.revoke_token(reader.token_id)
    with pytest.raises(Unauthorized):
        served.client(reader.token).whoami()


def test_registration_and_runner_tokens_do_only_their_job(served: Served):
    registration = served.tokens["registration"]
    assert status(served, "GET", "/v1/runs", token=registration).status_code == 403
    assert status(served, "POST", "/v1/lease", token=registration, json={"runner_id": "x"}).status_code == 403
    runner, runner_id = served.runner("runner-7")
    assert runner_id == "runner-7"
    assert runner.whoami().kind == "runner"
    assert runner.lease(runner_id) is None  # may lease (nothing queued)
    with pytest.raises(Forbidden):
        runner.list_runs()
    with pytest.raises(Forbidden):
        runner.lease("someone-else")  # leases as the runner it was issued to only
    # Registering again under the same name revokes the earlier runner token.
    served.runner("runner-7")
    with pytest.raises(Unauthorized):
        runner.lease(runner_id)
    # A user token cannot lease or register.
    user = served.tokens["user:acme"]
    assert status(served, "POST", "/v1/lease", token=user, json={"runner_id": "x"}).status_code == 403
    assert status(served, "POST", "/v1/runners/register", token=user, json={}).status_code == 403


def test_a_runner_registered_for_a_tenant_leases_only_that_tenants_jobs(served: Served):
    served.mint("acme-runners", kind="registration", tenant="acme")
    served.submit("globex")
    acme_run = served.submit("acme")
    runner, runner_id = served.runner("acme-box", registration="acme-runners")
    lease = served.lease(runner, runner_id)
    assert (lease.run_id, lease.context.tenant) == (acme_run.run_id, "acme")
    assert runner.lease(runner_id) is None  # globex's job is queued, but not for this runner


def test_the_server_admin_token_is_compared_not_stored(served: Served):
    with served.plane.scheduler.db.read_session() as session:
        stored = session.execute(text("SELECT count(*) FROM api_tokens WHERE kind = 'admin'")).scalar_one()
    assert stored == 0
    assert served.client(ADMIN).whoami().kind == "admin"
