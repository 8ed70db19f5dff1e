"""Logs: idempotent appends and cursor-based tails."""

from __future__ import annotations

import pytest
from tests.integration.metadata.helpers import complete, lease, submit

from kiln.errors import NotFound, UsageError
from kiln.scheduler import LogChunk, Scheduler


def test_appends_are_idempotent_on_the_sequence_number(scheduler: Scheduler) -> None:
    view = submit(scheduler, ["only"])
    leased = lease(scheduler)
    a, t = leased.attempt_id, leased.lease_token
    scheduler.append_logs(a, t, [LogChunk(0, None, "starting\n"), LogChunk(1, 0, "one\n")])
    scheduler.append_logs(a, t, [LogChunk(1, 0, "one\n"), LogChunk(2, 0, "two\n")])  # a retried post
    scheduler.append_logs(a, t, [LogChunk(3, 0, "three\n"), LogChunk(3, 0, "ignored\n")])
    scheduler.append_logs(a, t, [])
    lines = scheduler.get_logs(view.run_id).lines
    assert [(line.seq, line.step_index, line.data) for line in lines] == [
        (0, None, "starting\n"),
        (1, 0, "one\n"),
        (2, 0, "two\n"),
        (3, 0, "three\n"),
    ]
    assert {(line.job, line.attempt_number) for line in lines} == {("only", 1)}


def test_a_tail_follows_the_cursor_until_the_run_ends(scheduler: Scheduler) -> None:
    view = submit(scheduler, ["a", "b"])
    first = lease(scheduler)
    scheduler.append_logs(first.attempt_id, first.lease_token, [LogChunk(i, 0, f"a{i}\n") for i in range(5)])

    page = scheduler.get_logs(view.run_id, limit=3)
    assert [line.data for line in page.lines] == ["a0\n", "a1\n", "a2\n"] and not page.at_end
    page = scheduler.get_logs(view.run_id, after=page.cursor, limit=3)
    assert [line.data for line in page.lines] == ["a3\n", "a4\n"] and not page.at_end  # still running
    idle = scheduler.get_logs(view.run_id, after=page.cursor)
    assert idle.lines == () and idle.cursor == page.cursor

    complete(scheduler, first)
    second = lease(scheduler)
    scheduler.append_logs(second.attempt_id, second.lease_token, [LogChunk(0, 0, "b0\n")])
    complete(scheduler, second)
    last = scheduler.get_logs(view.run_id, after=page.cursor)
    assert [(line.job, line.data) for line in last.lines] == [("b", "b0\n")]
    assert last.at_end
    assert last.cursor > page.cursor
    # The cursor is a plain int on the wire.
    assert scheduler.get_logs(view.run_id, after=int(last.cursor)).lines == ()


def test_logs_of_one_job(scheduler: Scheduler) -> None:
    view = submit(scheduler, ["a", "b"])
    for name in ("a", "b"):
        leased = lease(scheduler)
        scheduler.append_logs(leased.attempt_id, leased.lease_token, [LogChunk(0, 0, f"{name}\n")])
        complete(scheduler, leased)
    assert [line.data for line in scheduler.get_logs(view.run_id, job="b").lines] == ["b\n"]
    with pytest.raises(NotFound, match="no job 'c'"):
        scheduler.get_logs(view.run_id, job="c")


def test_logs_are_per_tenant(scheduler: Scheduler) -> None:
    view = submit(scheduler, ["only"], tenant="acme")
    with pytest.raises(NotFound):
        scheduler.get_logs(view.run_id, tenant="globex")
    with pytest.raises(NotFound):
        scheduler.get_logs("01NOSUCHRUN0000000000000000")


def test_negative_sequence_numbers_are_refused(scheduler: Scheduler) -> None:
    submit(scheduler, ["only"])
    leased = lease(scheduler)
    with pytest.raises(UsageError):
        scheduler.append_logs(leased.attempt_id, leased.lease_token, [LogChunk(-1, None, "x")])
