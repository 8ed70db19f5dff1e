"""Tenant isolation through the API: with tenant B's token, tenant A's objects do not exist (404).

Every object kind a user reaches: runs (get, list, cancel, logs), sources (HEAD, GET, naming one
in a submission), tenants, repositories, tokens, caches, artifacts and image layers. An admin sees them all.
"""

from __future__ import annotations

import pytest

from kiln.api.models import LogChunkIn, RunContextIn, SubmitIn
from kiln.errors import NotFound

from .harness import WORKFLOW, Served, status


@pytest.fixture
def acme_run(served: Served):
    run = served.submit("acme")
    runner, runner_id = served.runner()
    lease = served.lease(runner, runner_id, run.run_id)
    runner.append_logs(
        lease.attempt_id, lease.lease_token, [LogChunkIn(seq=0, data="acme's secret build log\n")]
    )
    return run


def _get(served: Served, tenant: str, path: str, method: str = "GET", **kw):
    return status(served, method, path, token=served.tokens[f"user:{tenant}"], **kw)


def test_runs_and_logs_of_another_tenant_do_not_exist(served: Served, acme_run):
    run_id = acme_run.run_id
    assert _get(served, "acme", f"/v1/runs/{run_id}").status_code == 200
    logs = _get(served, "acme", f"/v1/runs/{run_id}/logs").json()
    assert "acme's secret build log" in "".join(line["data"] for line in logs["lines"])

    for method, path in [
        ("GET", f"/v1/runs/{run_id}"),
        ("GET", f"/v1/runs/{run_id}/logs"),
        ("POST", f"/v1/runs/{run_id}/cancel"),
        ("GET", "/v1/runs?tenant=acme"),
    ]:
        answer = _get(served, "globex", path, method)
        assert answer.status_code == 404, (method, path, answer.text)
        assert "secret" not in answer.text
    # A missing run and another tenant's run look the same.
    missing = _get(served, "globex", "/v1/runs/01NOSUCHRUN0000000000000000")
    assert (
        missing.json()["error"] == _get(served, "globex", f"/v1/runs/{run_id}").json()["error"] == "NotFound"
    )
    assert served.user("globex").list_runs() == []
    assert [r.run_id for r in served.user("acme").list_runs()] == [run_id]
    # The cancel by globex changed nothing.
    assert served.user("acme").get_run(run_id).status == "running"
    assert {r.run_id for r in served.admin.list_runs()} == {run_id}


def test_sources_of_another_tenant_cannot_be_read_or_run(served: Served, acme_run):
    digest = served.source_of(acme_run.run_id)
    assert _get(served, "acme", f"/v1/sources/{digest}", "HEAD").status_code == 200
    assert _get(served, "acme", f"/v1/sources/{digest}").status_code == 200
    assert _get(served, "globex", f"/v1/sources/{digest}", "HEAD").status_code == 404
    assert _get(served, "globex", f"/v1/sources/{digest}").status_code == 404
    # Knowing the digest is not enough to run on it: globex never uploaded those bytes.
    body = SubmitIn(
        context=RunContextIn(tenant="globex", repo="web"), workflow_text=WORKFLOW, source_digest=digest
    )
    assert _get(served, "globex", "/v1/runs", "POST", json=body.model_dump()).status_code == 404
    # An upload that claims the digest without the bytes is refused; with the bytes, it is globex's too.
    fake = _get(served, "globex", f"/v1/sources/{digest}", "PUT", content=b"not the source")
    assert fake.status_code == 422
    assert _get(served, "globex", f"/v1/sources/{digest}", "HEAD").status_code == 404
    real = _get(served, "acme", f"/v1/sources/{digest}").content
    assert _get(served, "globex", f"/v1/sources/{digest}", "PUT", content=real).status_code == 204
    assert _get(served, "globex", f"/v1/sources/{digest}", "HEAD").status_code == 200


def test_a_run_cannot_be_submitted_into_another_tenant(served: Served):
    own = served.submit("globex")  # a source globex may name
    body = SubmitIn(
        context=RunContextIn(tenant="acme", repo="web"),
        workflow_text=WORKFLOW,
        source_digest=served.source_of(own.run_id),
    )
    with pytest.raises(NotFound):
        served.user("globex").submit(body)
    assert served.user("acme").list_runs() == []


def test_tenants_repositories_and_tokens_of_another_tenant_do_not_exist(served: Served, acme_run):
    assert [t.name for t in served.user("globex").list_tenants()] == ["globex"]
    assert {t.name for t in served.admin.list_tenants()} == {"acme", "globex"}
    for path in ["/v1/tenants/acme", "/v1/tenants/acme/repositories", "/v1/tokens?tenant=acme"]:
        assert _get(served, "globex", path).status_code == 404, path
    assert (
        _get(served, "globex", "/v1/tenants/acme/repositories", "POST", json={"name": "x"}).status_code == 404
    )
    assert [r.name for r in served.user("acme").list_repositories("acme")] == ["web"]
    assert _get(served, "globex", "/v1/tenants", "POST", json={"name": "evil"}).status_code == 403


def test_caches_artifacts_and_image_layers_of_another_tenant_do_not_exist(served: Served, acme_run):
    assert _get(served, "globex", "/v1/images/layers?tenant=acme").status_code == 404
    assert _get(served, "acme", "/v1/images/layers?tenant=acme").status_code == 200
    assert _get(served, "globex", "/v1/caches?tenant=acme").status_code == 404
    assert _get(served, "globex", "/v1/caches").status_code == 200  # its own, whatever they are
    assert _get(served, "globex", "/v1/caches/remove?tenant=acme", "POST", json={}).status_code == 404
    assert _get(served, "acme", f"/v1/runs/{acme_run.run_id}/artifacts").status_code == 200
    assert _get(served, "globex", f"/v1/runs/{acme_run.run_id}/artifacts").status_code == 404
    assert _get(served, "globex", f"/v1/runs/{acme_run.run_id}/artifacts/dist").status_code == 404
