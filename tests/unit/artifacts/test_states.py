from __future__ import annotations

from tests.unit.scheduler._walk import reachable, walk_table

from kiln.artifacts.states import OPEN_STATES, TRANSITIONS, ArtifactEvent, ArtifactState, next_state
from kiln.metadata import entries


def test_the_whole_table_including_every_disallowed_pair() -> None:
    assert walk_table(ArtifactState, ArtifactEvent, TRANSITIONS, next_state) == len(TRANSITIONS) == 10


def test_every_state_is_reachable_and_deleted_is_final() -> None:
    assert reachable(ArtifactState.PENDING, TRANSITIONS) == set(ArtifactState)
    assert not [event for (state, event) in TRANSITIONS if state == ArtifactState.DELETED]


def test_only_committed_artifacts_commit_again_and_nothing_leaves_expired_but_deletion() -> None:
    assert next_state(ArtifactState.COMMITTED, ArtifactEvent.COMMIT) == ArtifactState.COMMITTED
    assert {e for (s, e) in TRANSITIONS if s == ArtifactState.EXPIRED} == {ArtifactEvent.DELETE}


def test_the_states_are_the_entry_statuses() -> None:
    assert {s.value for s in ArtifactState} == set(entries.STATUSES)
    assert {s.value for s in OPEN_STATES} == {entries.PENDING, entries.UPLOADING}
