"""The heartbeat's watchdog: a runner that cannot renew its lease stops its job before it expires."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

from kiln.api.models import HeartbeatOut
from kiln.errors import ControlPlaneUnavailable, LeaseLost
from kiln.runner.heartbeat import Heartbeat


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Client:
    """Answers heartbeats as told: ``ok``, ``down`` (the control plane is away) or ``lost``."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.beats = threading.Event()

    def heartbeat(self, attempt_id: str, token: str) -> HeartbeatOut:
        self.beats.set()
        if self.mode == "down":
            raise ControlPlaneUnavailable("control plane at http://kiln.test unreachable: HTTP 503")
        if self.mode == "lost":
            raise LeaseLost("attempt ended")
        return HeartbeatOut(expires_at=datetime.now(UTC), cancel_requested=self.mode == "cancel")


def _heartbeat(client: Client, clock: Clock, stops: list[str], ttl: float | None = 10.0) -> Heartbeat:
    return Heartbeat(
        client,  # type: ignore[arg-type]
        "a1",
        "kiln_job_x",
        interval_s=0.01,
        on_stop=stops.append,
        lease_ttl_s=ttl,
        clock=clock,
    )


def _settle(client: Client) -> None:
    for _ in range(3):  # a few beats go by
        client.beats.clear()
        assert client.beats.wait(5)


def test_confirmed_beats_keep_the_job_running_however_long_it_takes():
    client, clock, stops = Client(), Clock(), []
    with _heartbeat(client, clock, stops) as beat:
        for _ in range(5):
            clock.now += 5  # each step less than the unconfirmed limit (8 s of a 10 s lease)
            _settle(client)
    assert stops == [] and not beat.lease_lost


def test_the_job_is_stopped_once_no_beat_was_confirmed_for_most_of_the_lease():
    client, clock, stops = Client(), Clock(), []
    with _heartbeat(client, clock, stops) as beat:
        client.mode = "down"
        _settle(client)
        clock.now += 7.9  # 10 s lease, 2 s margin: not yet
        _settle(client)
        assert stops == []
        clock.now += 0.2
        deadline = threading.Event()
        for _ in range(500):
            if stops:
                break
            deadline.wait(0.01)
    assert stops == ["lease expired unconfirmed"]
    assert beat.lease_lost


def test_a_lost_lease_stops_the_job_once():
    client, clock, stops = Client(), Clock(), []
    client.mode = "lost"
    with _heartbeat(client, clock, stops) as beat:
        client.beats.wait(5)
        clock.now += 100  # the watchdog must not stop it a second time
        threading.Event().wait(0.1)
    assert stops == ["lease lost"] and beat.lease_lost


def test_without_a_ttl_there_is_no_watchdog():
    client, clock, stops = Client(), Clock(), []
    client.mode = "down"
    with _heartbeat(client, clock, stops, ttl=None):
        _settle(client)
        clock.now += 10_000
        _settle(client)
    assert stops == []
