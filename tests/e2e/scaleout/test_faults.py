"""Faults a fleet lives through, on PostgreSQL: the database going away, runners told to stop.

* The database is cut off for a few seconds while jobs run and runners poll: the server answers
  503, runners retry with backoff, and when it is back every job has run exactly once.
* Cut off for longer than a lease: the runner stops its job itself before the lease can expire
  (it cannot know the job was not handed to another runner), and the job runs again once the
  database is back; never on two runners at once.
* SIGTERM: the runner takes no new job and, when its job does not finish within --stop-timeout,
  gives it back; another runner runs it at once, without waiting for the lease to expire.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url
from tests.e2e.scaleout.fleet import Fleet, wait_for
from tests.e2e.scaleout.tcpproxy import TcpProxy

pytestmark = [pytest.mark.sandbox, pytest.mark.postgres]

STEADY = """
name: steady
jobs:
  first:
    image: busybox
    steps:
      - run: echo "first $KILN_ATTEMPT"; sleep 3
  second:
    image: busybox
    steps:
      - run: echo "second $KILN_ATTEMPT"
"""
LONG_FIRST_ATTEMPT = """
name: long
jobs:
  work:
    image: busybox
    steps:
      - run: |
          echo "attempt $KILN_ATTEMPT started"
          if [ "$KILN_ATTEMPT" = 1 ]; then sleep 600; fi
          echo "attempt $KILN_ATTEMPT done"
"""


@pytest.fixture
def proxied(postgres_database_url: str):
    url = make_url(postgres_database_url)
    with TcpProxy((url.host or "127.0.0.1", url.port or 5432)) as proxy:
        yield proxy, url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)


def test_runners_ride_out_a_short_database_outage_and_run_every_job_once(proxied, tmp_path: Path):
    proxy, url = proxied
    with Fleet(tmp_path, url, lease_ttl_s=20, tenants=("acme",)) as fleet:
        fleet.start_runner("r1")
        fleet.start_runner("r2")
        runs = [fleet.submit("acme", STEADY, repo=f"repo-{i}") for i in range(2)]
        client = fleet.user("acme")
        wait_for(
            lambda: all(any("first 1" in ln.data for ln in client.logs(r.run_id).lines) for r in runs),
            60,
            "both first jobs to start",
        )
        proxy.cut()
        time.sleep(5)  # heartbeats, log posts and polls fail meanwhile; the server answers 503
        assert fleet.ready() is False
        proxy.restore()
        finals = [fleet.wait_final(r.run_id, timeout=120) for r in runs]
        for final in finals:
            assert final.status == "success", final
            assert [[a.status for a in job.attempts] for job in final.jobs] == [["success"], ["success"]]
        assert all(p.poll() is None for p in fleet.runners.values())
        assert "retrying" in fleet.logs("r1") + fleet.logs("r2")  # they saw it, and retried


def test_a_runner_cut_off_longer_than_its_lease_stops_the_job_and_it_runs_again(proxied, tmp_path: Path):
    proxy, url = proxied
    with Fleet(tmp_path, url, lease_ttl_s=4, tenants=("acme",)) as fleet:
        fleet.start_runner("r1")
        run = fleet.submit("acme", LONG_FIRST_ATTEMPT)
        client = fleet.user("acme")
        wait_for(
            lambda: any("attempt 1 started" in ln.data for ln in client.logs(run.run_id).lines), 60, "start"
        )
        proxy.cut()
        # The runner's watchdog stops the job before the lease (4 s) could expire on the server.
        wait_for(lambda: "whose lease may have expired" in fleet.logs("r1"), 30, "the runner to fence itself")
        proxy.restore()
        final = fleet.wait_final(run.run_id, timeout=120)
        assert final.status == "success"
        assert [a.status for a in final.jobs[0].attempts] == ["lost", "success"]
        lines = [ln.data for ln in client.logs(run.run_id).lines]
        assert any("attempt 2 done" in ln for ln in lines)
        assert not any("attempt 1 done" in ln for ln in lines)


def test_sigterm_gives_back_a_job_that_does_not_finish_in_time(fleet: Fleet):
    run = fleet.submit("acme", LONG_FIRST_ATTEMPT)
    stopping = fleet.start_runner("stopping", "--stop-timeout", "1")
    client = fleet.user("acme")
    wait_for(lambda: any("attempt 1 started" in ln.data for ln in client.logs(run.run_id).lines), 60, "start")
    stopping.send_signal(signal.SIGTERM)
    assert stopping.wait(30) == 0
    given_back = fleet.admin.get_run(run.run_id).jobs[0]
    assert given_back.status == "queued"  # at once, not after the lease's 10 s
    assert given_back.attempts[0].status == "lost"
    assert "given back by runner stopping" in (given_back.attempts[0].error_message or "")
    fleet.start_runner("next")
    final = fleet.wait_final(run.run_id, timeout=60)
    assert final.status == "success"
    assert [(a.status, a.runner_id) for a in final.jobs[0].attempts] == [
        ("lost", "stopping"),
        ("success", "next"),
    ]


def test_sigterm_lets_a_short_job_finish(fleet: Fleet):
    quick = "name: q\njobs:\n  j:\n    image: busybox\n    steps:\n      - run: sleep 2; echo finished\n"
    run = fleet.submit("acme", quick)
    runner = fleet.start_runner("polite")
    client = fleet.user("acme")
    wait_for(lambda: client.get_run(run.run_id).status == "running", 60, "the job to start")
    runner.send_signal(signal.SIGTERM)
    assert runner.wait(60) == 0
    final = client.get_run(run.run_id)
    assert final.status == "success"
    assert [a.status for a in final.jobs[0].attempts] == ["success"]
