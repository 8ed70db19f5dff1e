"""An upload bandwidth cap shared by every part in flight."""

from __future__ import annotations

import threading
from collections.abc import Callable

__all__ = ["Throttle"]


class Throttle:
    """Spaces sends so their total stays under ``rate_bytes_s``.

    Each caller reserves its bytes on a shared timeline under the lock, then sleeps *outside*
    the lock until its slot starts (s3transfer's rule: never sleep holding the lock). ``clock``
    and ``sleep`` are injected so tests need no real waiting.
    """

    def __init__(
        self, rate_bytes_s: int, *, clock: Callable[[], float], sleep: Callable[[float], None]
    ) -> None:
        if rate_bytes_s <= 0:
            raise ValueError("rate must be > 0")
        self._rate = float(rate_bytes_s)
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._next_free = 0.0

    def acquire(self, n_bytes: int) -> None:
        """Wait until ``n_bytes`` may be sent."""
        with self._lock:
            now = self._clock()
            start = max(now, self._next_free)
            self._next_free = start + n_bytes / self._rate
        if start > now:
            self._sleep(start - now)
