"""Small helpers shared by the query modules (private to ``kiln.metadata``)."""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import CursorResult, Result, Update, update
from sqlalchemy.orm import Session

__all__ = ["dialect_of", "guarded_update", "rowcount"]


def guarded_update(model: type[Any]) -> Update:
    """An ``UPDATE`` on a mapped class that does not try to synchronise loaded ORM objects.

    The query modules never keep ORM objects in the session, so there is nothing to synchronise,
    and skipping it keeps each transition exactly one statement.
    """
    return update(model).execution_options(synchronize_session=False)


def rowcount(result: Result[Any]) -> int:
    """The number of rows an ``UPDATE`` or ``DELETE`` matched."""
    return cast(CursorResult[Any], result).rowcount


def dialect_of(session: Session) -> str:
    """``"sqlite"`` or ``"postgresql"``."""
    return session.get_bind().dialect.name
