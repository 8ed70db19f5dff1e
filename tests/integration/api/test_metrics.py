"""``GET /metrics``: Prometheus text with request counts by route template and the plane's counts."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from .harness import Served, status


def _samples(served: Served) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    answer = status(served, "GET", "/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }


def test_metrics_count_requests_by_route_and_report_queue_runners_and_entries(served: Served):
    run = served.submit("acme")
    runner, runner_id = served.runner()
    served.lease(runner, runner_id, run.run_id)
    for _ in range(3):
        assert served.user("acme").get_run(run.run_id).run_id == run.run_id
    assert (
        status(
            served, "GET", "/v1/runs/01NOSUCHRUN0000000000000000", token=served.tokens["user:acme"]
        ).status_code
        == 404
    )

    samples = _samples(served)
    get_run = (("method", "GET"), ("route", "/v1/runs/{run_id}"), ("status", "200"))
    assert samples[("kiln_http_requests_total", get_run)] == 3
    missing = (("method", "GET"), ("route", "/v1/runs/{run_id}"), ("status", "404"))
    assert samples[("kiln_http_requests_total", missing)] == 1
    # Run ids never become labels: one series per route template.
    assert not any(run.run_id in value for _, labels in samples for _, value in labels)
    assert (
        samples[
            ("kiln_http_request_duration_seconds_count", (("method", "GET"), ("route", "/v1/runs/{run_id}")))
        ]
        == 4
    )

    assert samples[("kiln_database_up", ())] == 1
    assert samples[("kiln_runs", (("status", "running"),))] == 1
    assert samples[("kiln_jobs", (("status", "running"),))] == 1  # the leased first job
    assert samples[("kiln_jobs", (("status", "pending"),))] == 1  # the second waits for it
    assert samples[("kiln_attempts", (("status", "running"),))] == 1
    assert samples[("kiln_runners_live", ())] == 1
    # No tenant name anywhere in the metrics.
    assert "acme" not in status(served, "GET", "/metrics").text


def test_metrics_need_no_token_even_where_the_api_does(served: Served):
    assert status(served, "GET", "/v1/runs").status_code == 401
    assert status(served, "GET", "/metrics").status_code == 200
