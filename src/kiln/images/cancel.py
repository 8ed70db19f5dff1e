"""Stopping an image build from another thread: a job's cancel reaches the build it waits on.

A custom image is built before the job's own sandbox opens, so the executor's usual stop (cancel
the job's :class:`~kiln.sandbox.JobSandbox`) has nothing to reach while the image builds. The
executor hands the build a :class:`BuildCancel` instead and sets it on the same signal (a cancelled
run, a lost lease, the runner giving the job back). Setting it

- cancels the build step running now (its sandbox kills the step's whole cgroup, unmounts and
  removes its scratch, as for a job step),
- ends any wait: for another build of the same key (on this machine or elsewhere), and
- stops the walk before the next layer.

The layer being built is abandoned like any failed one: nothing partial is committed. Host tools
a base runs outside the sandbox (``skopeo copy``, ``mmdebstrap``) are not interrupted: they run
to their end or their own timeout, and the build stops right after.
"""

from __future__ import annotations

import contextlib
import fcntl
import threading
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING

from kiln.errors import ImageBuildFailed

if TYPE_CHECKING:
    from kiln.sandbox import JobSandbox

__all__ = ["BuildCancel", "BuildCancelled"]

_LOCK_POLL_S = 0.2


class BuildCancelled(ImageBuildFailed):
    """The image build was cancelled."""


class BuildCancel:
    """A sticky cancel for one job's image build; :meth:`cancel` may be called from any thread."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._boxes: list[JobSandbox] = []

    @property
    def requested(self) -> bool:
        return self._event.is_set()

    def cancel(self) -> None:
        """Stop the build: the running build step now, every later wait and layer at once."""
        with self._lock:
            self._event.set()
            boxes = list(self._boxes)
        for box in boxes:
            box.cancel()

    def check(self, what: str) -> None:
        """Raise :class:`BuildCancelled` (naming ``what``) once the build is cancelled."""
        if self._event.is_set():
            raise BuildCancelled(f"{what}: cancelled")

    def wait(self, seconds: float) -> None:
        """Sleep ``seconds``, or less if the build is cancelled meanwhile."""
        self._event.wait(seconds)

    @contextlib.contextmanager
    def watching(self, box: JobSandbox) -> Iterator[None]:
        """Cancel ``box`` with the build while the block runs (at once if already cancelled)."""
        with self._lock:
            self._boxes.append(box)
            cancelled = self._event.is_set()
        if cancelled:
            box.cancel()
        try:
            yield
        finally:
            with self._lock:
                self._boxes.remove(box)

    def flock(self, handle: IO[str], what: str) -> None:
        """Take an exclusive flock on ``handle``, waiting as long as it takes unless cancelled.

        Raises
        ------
        BuildCancelled
            The build was cancelled while waiting (the lock is not held).
        """
        while True:
            self.check(what)
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                self.wait(_LOCK_POLL_S)
