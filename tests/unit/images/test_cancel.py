"""BuildCancel: sticky, ends waits for a lock at once, and reaches a sandbox registered late."""

from __future__ import annotations

import fcntl
import threading
from pathlib import Path

import pytest

from kiln.images.cancel import BuildCancel, BuildCancelled


class _Box:
    def __init__(self) -> None:
        self.cancelled = 0

    def cancel(self) -> None:
        self.cancelled += 1


def test_a_cancel_ends_a_wait_for_a_lock_another_build_holds(tmp_path: Path) -> None:
    lock = tmp_path / "key.lock"
    cancel = BuildCancel()
    with lock.open("a") as holder, lock.open("a") as waiter:
        fcntl.flock(holder, fcntl.LOCK_EX)
        threading.Timer(0.2, cancel.cancel).start()
        with pytest.raises(BuildCancelled, match="step 1: waiting: cancelled"):
            cancel.flock(waiter, "step 1: waiting")


def test_a_free_lock_is_taken_and_a_cancel_is_sticky(tmp_path: Path) -> None:
    cancel = BuildCancel()
    with (tmp_path / "key.lock").open("a") as handle:
        cancel.flock(handle, "step 1")
    cancel.cancel()
    assert cancel.requested
    with pytest.raises(BuildCancelled):
        cancel.check("step 2")


def test_a_sandbox_watched_after_the_cancel_is_cancelled_at_once() -> None:
    cancel, early, late = BuildCancel(), _Box(), _Box()
    with cancel.watching(early):  # type: ignore[arg-type]
        cancel.cancel()
        assert early.cancelled == 1
    with cancel.watching(late):  # type: ignore[arg-type]
        assert late.cancelled == 1
    cancel.cancel()
    assert (early.cancelled, late.cancelled) == (1, 1)  # no longer watched
