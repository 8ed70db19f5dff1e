"""Run the janitor's tasks periodically in a background thread of the control plane."""

from __future__ import annotations

import logging
import threading

from kiln.errors import KilnError
from kiln.janitor.storage_gc import StorageJanitor
from kiln.scheduler import Scheduler

__all__ = ["JanitorLoop"]

log = logging.getLogger(__name__)


class JanitorLoop:
    """Reclaim expired leases every ``interval_s``; with ``storage``, collect storage garbage too
    (at the storage janitor's own, much longer, interval)."""

    def __init__(
        self, scheduler: Scheduler, *, interval_s: float = 1.0, storage: StorageJanitor | None = None
    ) -> None:
        self._scheduler = scheduler
        self._interval_s = interval_s
        self._storage = storage
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="kiln-janitor", daemon=True)

    def tick(self) -> None:
        for reclaimed in self._scheduler.reclaim_expired_leases():
            log.warning("reclaimed expired lease: %s", reclaimed)
        if self._storage is not None:
            self._storage.tick()

    def _loop(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self.tick()
            except KilnError as exc:  # e.g. the database went away; try again next tick
                log.warning("janitor tick failed: %s", exc)

    def __enter__(self) -> JanitorLoop:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
