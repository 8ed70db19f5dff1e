"""The artifact state machine (ARCHITECTURE.md §8), kept in the shared ``entries`` table.

An artifact is visible to jobs and users only while ``committed``; every other state says why not.

=========  =========  =========  ===================================================================
from       event      to         when
=========  =========  =========  ===================================================================
pending    upload     uploading  the producer reserved it with its blob's digest (stored yet or not)
pending    fail       failed     nothing to upload (no files matched) or the producer gave up
uploading  upload     uploading  a retried reserve (the same bytes, the same blob)
uploading  commit     committed  the blob is stored with its size: finalize
uploading  fail       failed     the upload failed, lost a commit race, or was abandoned
committed  commit     committed  a repeated finalize with the same digest (idempotent)
committed  expire     expired    its retention is over (invisible at once; the blob goes later)
committed  delete     deleted    removed by a user or the janitor
expired    delete     deleted    the janitor removed what was left of it
failed     delete     deleted    the janitor removed what was left of it
=========  =========  =========  ===================================================================
"""

from __future__ import annotations

from enum import StrEnum

from kiln.errors import IllegalTransition

__all__ = ["OPEN_STATES", "TRANSITIONS", "ArtifactEvent", "ArtifactState", "next_state"]


class ArtifactState(StrEnum):
    PENDING = "pending"
    UPLOADING = "uploading"
    COMMITTED = "committed"
    FAILED = "failed"
    EXPIRED = "expired"
    DELETED = "deleted"


class ArtifactEvent(StrEnum):
    UPLOAD = "upload"
    COMMIT = "commit"
    FAIL = "fail"
    EXPIRE = "expire"
    DELETE = "delete"


S, E = ArtifactState, ArtifactEvent

TRANSITIONS: dict[tuple[ArtifactState, ArtifactEvent], ArtifactState] = {
    (S.PENDING, E.UPLOAD): S.UPLOADING,
    (S.PENDING, E.FAIL): S.FAILED,
    (S.UPLOADING, E.UPLOAD): S.UPLOADING,
    (S.UPLOADING, E.COMMIT): S.COMMITTED,
    (S.UPLOADING, E.FAIL): S.FAILED,
    (S.COMMITTED, E.COMMIT): S.COMMITTED,
    (S.COMMITTED, E.EXPIRE): S.EXPIRED,
    (S.COMMITTED, E.DELETE): S.DELETED,
    (S.EXPIRED, E.DELETE): S.DELETED,
    (S.FAILED, E.DELETE): S.DELETED,
}

#: States of an artifact whose producer may still commit it.
OPEN_STATES = frozenset({S.PENDING, S.UPLOADING})

del S, E


def next_state(state: ArtifactState, event: ArtifactEvent) -> ArtifactState:
    """Return the state an artifact in ``state`` moves to on ``event``.

    Parameters
    ----------
    state
        The artifact's current state.
    event
        What happened.

    Returns
    -------
    ArtifactState
        The next state.

    Raises
    ------
    IllegalTransition
        The table has no such edge; the message names the state and the event.
    """
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise IllegalTransition(f"an artifact that is {state} cannot take the event {event}") from None
