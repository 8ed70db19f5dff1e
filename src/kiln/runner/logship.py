"""Ship a job's output to the control plane: decoded, masked, batched, numbered, retried.

Output arrives as bytes from the sandbox (any thread). It is decoded incrementally (a UTF-8
sequence cut between two reads is not mangled), masked (:mod:`kiln.runner.masking`), and buffered.
A background thread sends what is buffered every ``interval_s`` or as soon as ``max_batch`` bytes
wait. Every chunk carries a sequence number, so a POST retried after a lost response is stored once.
"""

from __future__ import annotations

import codecs
import threading
from collections.abc import Callable

from kiln.api.models import LogChunkIn
from kiln.runner.masking import SecretMasker, StreamMasker

__all__ = ["LogShipper"]

Send = Callable[[list[LogChunkIn]], None]


class LogShipper:
    def __init__(
        self,
        send: Send,
        masker: SecretMasker,
        *,
        interval_s: float = 0.3,
        max_batch: int = 256 * 1024,
        echo: Callable[[str], None] | None = None,
    ) -> None:
        self._send = send
        self._masker = masker
        self._interval_s = interval_s
        self._max_batch = max_batch
        self._echo = echo
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._pending: list[LogChunkIn] = []
        self._pending_bytes = 0
        self._seq = 0
        self._step: int | None = None
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stream = StreamMasker(masker)
        self._closed = False
        self.send_errors: list[BaseException] = []
        self._thread = threading.Thread(target=self._loop, name="kiln-logship", daemon=True)
        self._thread.start()

    # -- producers ---------------------------------------------------------------------------------

    def set_step(self, index: int | None) -> None:
        """Lines written after this belong to step ``index`` (None: the job's own lines)."""
        with self._lock:
            self._drain_locked(final=True)
            self._step = index

    def write(self, data: bytes) -> None:
        with self._lock:
            self._queue_locked(self._stream.feed(self._decoder.decode(data)))

    def line(self, text: str) -> None:
        """A line of kiln's own (step headers, results), masked like everything else."""
        with self._lock:
            self._drain_locked(final=True)
            self._queue_locked(self._masker.mask(text.rstrip("\n")) + "\n")

    # -- delivery ----------------------------------------------------------------------------------

    def close(self) -> None:
        """Send everything still buffered; returns once the control plane has it (or gave up)."""
        with self._lock:
            self._drain_locked(final=True)
            self._closed = True
            self._wake.notify()
        self._thread.join()

    def _drain_locked(self, *, final: bool) -> None:
        if final:
            self._queue_locked(
                self._stream.feed(self._decoder.decode(b"", final=True)) + self._stream.flush()
            )

    def _queue_locked(self, text: str) -> None:
        if not text:
            return
        if self._echo is not None:
            self._echo(text)
        self._seq += 1
        self._pending.append(LogChunkIn(seq=self._seq, step_index=self._step, data=text))
        self._pending_bytes += len(text)
        if self._pending_bytes >= self._max_batch:
            self._wake.notify()

    def _loop(self) -> None:
        while True:
            with self._lock:
                if not self._closed and self._pending_bytes < self._max_batch:
                    self._wake.wait(self._interval_s)
                batch, self._pending, self._pending_bytes = self._pending, [], 0
                closed = self._closed
            if batch:
                try:
                    self._send(batch)
                except Exception as exc:  # the job goes on; the error is reported at the end
                    self.send_errors.append(exc)
            if closed:
                with self._lock:
                    if not self._pending:
                        return
