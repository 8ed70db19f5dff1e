"""Keep a job's lease alive, and learn from the answers when the job must stop.

The heartbeat runs every third of the lease's time to live (at most every few seconds, so a
cancel is noticed quickly), so two beats may be lost before the lease expires. A ``LeaseLost``
answer means the control plane gave the job to another runner: the sandbox is killed at once,
because two runners must never work on one job. A cancel request stops the sandbox too, but the
attempt is still this runner's to complete.

When the control plane cannot be reached (it or its database is down), the runner cannot learn
that its lease was reclaimed. So it fences itself: a watchdog kills the sandbox once no heartbeat
has been confirmed for the lease's time to live minus a margin, counted from when the last
confirmed beat was *sent*, which is before the server computed the expiry it extended the lease
to. The server cannot hand the job to another runner before that expiry, so the two never overlap.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from kiln.errors import KilnError, LeaseLost
from kiln.runner.client import ControlPlaneClient

__all__ = ["Heartbeat"]

log = logging.getLogger(__name__)


class Heartbeat:
    def __init__(
        self,
        client: ControlPlaneClient,
        attempt_id: str,
        lease_token: str,
        *,
        interval_s: float,
        on_stop: Callable[[str], None],
        lease_ttl_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._attempt_id = attempt_id
        self._token = lease_token
        self._interval_s = interval_s
        self._on_stop = on_stop
        self._clock = clock
        # Self-fencing deadline (see the module's docstring); None: trust the server alone.
        self._unconfirmed_limit_s = None if lease_ttl_s is None else lease_ttl_s - min(lease_ttl_s * 0.2, 5.0)
        self._confirmed_at = clock()  # the lease was granted just before the job started
        self._stopped = threading.Event()
        self._stop_once = threading.Lock()
        self.lease_lost = False
        self.cancel_requested = False
        self._thread = threading.Thread(target=self._loop, name="kiln-heartbeat", daemon=True)
        self._watchdog = threading.Thread(target=self._watch, name="kiln-lease-watchdog", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        if self._unconfirmed_limit_s is not None:
            self._watchdog.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopped.set()
        # The beat may be inside the client's retries for a while; it is a daemon thread and will
        # find the attempt ended. Waiting for it would hold the runner up for nothing.
        self._thread.join(timeout=1.0)
        if self._watchdog.is_alive():
            self._watchdog.join()

    def _lose(self, reason: str) -> None:
        with self._stop_once:
            if self.lease_lost:
                return
            self.lease_lost = True
        self._on_stop(reason)

    def _loop(self) -> None:
        while not self._stopped.wait(self._interval_s):
            sent = self._clock()
            try:
                beat = self._client.heartbeat(self._attempt_id, self._token)
            except LeaseLost:
                self._lose("lease lost")
                return
            except KilnError as exc:  # the client already retried; the lease may still hold
                log.warning("heartbeat for attempt %s failed: %s", self._attempt_id, exc)
                continue
            self._confirmed_at = max(self._confirmed_at, sent)
            if beat.cancel_requested and not self.cancel_requested:
                self.cancel_requested = True
                self._on_stop("cancelled")

    def _watch(self) -> None:
        assert self._unconfirmed_limit_s is not None
        while not self._stopped.wait(min(0.2, self._interval_s)):
            if self.lease_lost:
                return
            unconfirmed_s = self._clock() - self._confirmed_at
            if unconfirmed_s > self._unconfirmed_limit_s:
                log.warning(
                    "no heartbeat of attempt %s confirmed for %.1fs: stopping the job, whose lease may "
                    "have expired (the runner was paused, or cut off from the control plane)",
                    self._attempt_id,
                    unconfirmed_s,
                )
                self._lose("lease expired unconfirmed")
                return
