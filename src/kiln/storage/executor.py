"""A bounded executor and a first-error-wins coordinator for the parts of one transfer."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

__all__ = ["BoundedExecutor", "Coordinator"]


class BoundedExecutor:
    """A thread pool whose ``submit`` blocks once ``max_workers + max_pending`` tasks are queued.

    The producer (the thread reading parts from disk) then slows down to the pace of the uploads
    instead of reading the whole file into memory.
    """

    def __init__(
        self, max_workers: int, max_pending: int, *, thread_name_prefix: str = "kiln-transfer"
    ) -> None:
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix=thread_name_prefix)
        self._slots = threading.BoundedSemaphore(max_workers + max_pending)

    def submit(self, fn: Callable[..., Any], /, *args: Any) -> Future[Any]:
        """Run ``fn(*args)`` on the pool, waiting first for a free slot."""
        self._slots.acquire()
        try:
            future = self._pool.submit(fn, *args)
        except BaseException:
            self._slots.release()
            raise
        future.add_done_callback(lambda _: self._slots.release())
        return future

    def shutdown(self, *, wait: bool = True) -> None:
        """Stop accepting tasks; with ``wait``, return once every submitted task has finished."""
        self._pool.shutdown(wait=wait)


class Coordinator:
    """Holds the first fatal error of a transfer; once set, every task stops at its next check."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._error: BaseException | None = None
        self._failed = threading.Event()

    @property
    def failed(self) -> bool:
        """Whether a fatal error has been recorded."""
        return self._failed.is_set()

    @property
    def error(self) -> BaseException | None:
        """The first fatal error, if any."""
        return self._error

    def fail(self, error: BaseException) -> None:
        """Record ``error`` unless an earlier one is already recorded (the first error wins)."""
        with self._lock:
            if self._error is None:
                self._error = error
                self._failed.set()

    def wait_failed(self, timeout_s: float) -> bool:
        """Sleep up to ``timeout_s``, waking early if the transfer fails; return whether it failed."""
        return self._failed.wait(timeout_s)
