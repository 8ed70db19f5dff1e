"""Walk a state table completely: every (state, event) pair, allowed or not."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from enum import Enum
from typing import Any

import pytest

from kiln.errors import IllegalTransition


def walk_table(
    states: Iterable[Enum],
    events: Iterable[Enum],
    transitions: dict[tuple[Any, Any], Any],
    next_state: Callable[[Any, Any], Any],
) -> int:
    """Check ``next_state`` against ``transitions`` for every pair; return how many are allowed."""
    allowed = 0
    for state in states:
        for event in events:
            if (state, event) in transitions:
                assert next_state(state, event) == transitions[(state, event)]
                allowed += 1
            else:
                with pytest.raises(IllegalTransition):
                    next_state(state, event)
    return allowed


def reachable(initial: Enum, transitions: dict[tuple[Any, Any], Any]) -> set[Any]:
    """Every state reachable from ``initial``."""
    seen = {initial}
    frontier = [initial]
    while frontier:
        state = frontier.pop()
        for (source, _event), target in transitions.items():
            if source == state and target not in seen:
                seen.add(target)
                frontier.append(target)
    return seen
