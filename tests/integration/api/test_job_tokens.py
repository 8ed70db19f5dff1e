"""A job token (the lease token) authorizes one attempt's work and nothing broader, while it runs.

It cannot be used for another job, after its job ends, after its lease expires, or for anything
but the attempt's routes and its run's source; a runner whose job was reclaimed is fenced.
"""

from __future__ import annotations

from kiln.api.models import CompleteIn, LogChunkIn

from .harness import LEASE_TTL_S, Served, status


def test_a_job_token_works_for_its_own_attempt_and_source(served: Served):
    run = served.submit("acme")
    runner, runner_id = served.runner()
    lease = served.lease(runner, runner_id, run.run_id)
    assert lease.lease_token.startswith("kiln_job_")
    token = lease.lease_token
    assert (
        status(served, "POST", f"/v1/attempts/{lease.attempt_id}/heartbeat", lease=token).status_code == 200
    )
    assert status(served, "GET", f"/v1/sources/{lease.source_digest}", lease=token).status_code == 200
    # As a bearer token, it says what it is.
    me = status(served, "GET", "/v1/whoami", token=token).json()
    assert (me["kind"], me["tenant"], me["attempt_id"]) == ("job", "acme", lease.attempt_id)


def test_a_job_token_cannot_be_used_for_another_job_or_anything_broader(served: Served):
    first, second = served.submit("acme"), served.submit("globex", files={"other.txt": "other source"})
    runner, runner_id = served.runner()
    mine = served.lease(runner, runner_id, first.run_id)
    theirs = served.lease(runner, runner_id, second.run_id)
    token = mine.lease_token
    for path in ("heartbeat", "logs", "steps/0/start", "complete", "release"):
        answer = status(served, "POST", f"/v1/attempts/{theirs.attempt_id}/{path}", lease=token, json={})
        assert answer.status_code == 403, (path, answer.text)
    assert status(served, "GET", f"/v1/sources/{theirs.source_digest}", lease=token).status_code == 404
    for method, path in [
        ("GET", "/v1/runs"),
        ("GET", f"/v1/runs/{mine.run_id}"),
        ("GET", f"/v1/runs/{mine.run_id}/logs"),
        ("POST", f"/v1/runs/{mine.run_id}/cancel"),
        ("GET", "/v1/caches"),
        ("GET", "/v1/tokens"),
        ("POST", "/v1/lease"),
        ("PUT", f"/v1/sources/{mine.source_digest}"),
    ]:
        assert status(served, method, path, token=token, json={}).status_code == 403, (method, path)
    # Nothing of the other attempt changed: its own token still holds it.
    assert served.client(None).heartbeat(theirs.attempt_id, theirs.lease_token).cancel_requested is False


def test_a_job_token_is_dead_once_its_job_ends(served: Served):
    run = served.submit("acme")
    runner, runner_id = served.runner()
    lease = served.lease(runner, runner_id, run.run_id)
    runner.complete(lease.attempt_id, lease.lease_token, CompleteIn(status="success"))
    for path in ("heartbeat", "logs", "steps/0/start", "image"):
        body = {"chunks": [{"seq": 9, "data": "late"}]} if path == "logs" else {"name": "x", "digest": "y"}
        answer = status(
            served, "POST", f"/v1/attempts/{lease.attempt_id}/{path}", lease=lease.lease_token, json=body
        )
        assert (answer.status_code, answer.json()["error"]) == (409, "LeaseLost"), path
    assert (
        status(served, "GET", f"/v1/sources/{lease.source_digest}", lease=lease.lease_token).status_code
        == 409
    )
    assert "late" not in "".join(line.data for line in served.user("acme").logs(run.run_id).lines)


def test_a_job_token_is_dead_once_its_lease_expires_even_before_the_janitor_runs(served: Served):
    run = served.submit("acme")
    runner, runner_id = served.runner()
    lease = served.lease(runner, runner_id, run.run_id)
    path = f"/v1/attempts/{lease.attempt_id}/heartbeat"
    served.clock.advance(LEASE_TTL_S / 2)
    assert status(served, "POST", path, lease=lease.lease_token).status_code == 200  # extends the lease
    served.clock.advance(LEASE_TTL_S + 1)
    answer = status(served, "POST", path, lease=lease.lease_token)
    assert (answer.status_code, answer.json()["error"]) == (409, "LeaseLost")
    assert "expired" in answer.json()["message"]
    # Nobody has reclaimed it yet: the attempt is still running in the database, yet fenced.
    assert served.admin.get_run(run.run_id).jobs[0].attempts[0].status == "running"


def test_a_late_runner_is_fenced_after_its_job_went_to_another_runner(served: Served):
    run = served.submit("acme")
    late, late_id = served.runner("late")
    first = served.lease(late, late_id, run.run_id)
    late.append_logs(first.attempt_id, first.lease_token, [LogChunkIn(seq=0, data="before the pause\n")])
    served.clock.advance(LEASE_TTL_S + 1)
    (reclaimed,) = served.plane.scheduler.reclaim_expired_leases()
    assert reclaimed.attempt_id == first.attempt_id
    other, other_id = served.runner("other")
    second = served.lease(other, other_id, run.run_id)
    assert (second.job_name, second.attempt_number) == (first.job_name, 2)

    token = first.lease_token
    for path, body in [
        ("heartbeat", None),
        ("logs", {"chunks": [{"seq": 1, "data": "zombie\n"}]}),
        ("steps/0/start", {"name": "s"}),
        ("complete", {"status": "success"}),
        ("release", {"reason": "x"}),
        ("caches/lookup", {}),
        ("needed-artifacts", None),
    ]:
        method = "GET" if path == "needed-artifacts" else "POST"
        answer = status(served, method, f"/v1/attempts/{first.attempt_id}/{path}", lease=token, json=body)
        assert (answer.status_code, answer.json()["error"]) == (409, "LeaseLost"), path

    view = served.admin.get_run(run.run_id).jobs[0]
    assert [a.status for a in view.attempts] == ["lost", "running"]
    lines = served.admin.logs(run.run_id).lines
    assert [line.data for line in lines] == ["before the pause\n"]  # kept, and nothing after


def test_a_given_back_job_is_queued_again_and_its_token_dies(served: Served):
    run = served.submit("acme")
    runner, runner_id = served.runner()
    lease = served.lease(runner, runner_id, run.run_id)
    runner.release(lease.attempt_id, lease.lease_token, "the runner is stopping")
    assert (
        status(
            served, "POST", f"/v1/attempts/{lease.attempt_id}/heartbeat", lease=lease.lease_token
        ).status_code
        == 409
    )
    again = served.lease(runner, runner_id, run.run_id)
    assert (again.job_name, again.attempt_number) == (lease.job_name, 2)
    first = served.admin.get_run(run.run_id).jobs[0].attempts[0]
    assert first.status == "lost"
    assert "given back" in (first.error_message or "")
