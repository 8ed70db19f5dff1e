"""Keep a job's lease alive, and learn from the answers when the job must stop.

The heartbeat runs every third of the lease's time to live, so two beats may be lost before the
lease expires. A ``LeaseLost`` answer means the control plane gave the job to another runner: the
sandbox is killed at once, because two runners must never work on one job. A cancel request stops
the sandbox too, but the attempt is still this runner's to complete.
"""

from __future__ import annotations

import logging
import threading
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
    ) -> None:
        self._client = client
        self._attempt_id = attempt_id
        self._token = lease_token
        self._interval_s = interval_s
        self._on_stop = on_stop
        self._stopped = threading.Event()
        self.lease_lost = False
        self.cancel_requested = False
        self._thread = threading.Thread(target=self._loop, name="kiln-heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopped.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stopped.wait(self._interval_s):
            try:
                beat = self._client.heartbeat(self._attempt_id, self._token)
            except LeaseLost:
                self.lease_lost = True
                self._on_stop("lease lost")
                return
            except KilnError as exc:  # the client already retried; the lease may still hold
                log.warning("heartbeat for attempt %s failed: %s", self._attempt_id, exc)
                continue
            if beat.cancel_requested and not self.cancel_requested:
                self.cancel_requested = True
                self._on_stop("cancelled")
