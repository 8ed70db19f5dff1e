"""kiln's scheduler: runs, jobs in file order, attempts, leases, steps and logs.

The HTTP API calls :class:`Scheduler`; everything it returns is a frozen dataclass from
``views``. The state machines live one per module (``job_states``, ``attempt_states``,
``run_states``, ``step_states``), the retry policy in ``retry``, the outcome order in ``outcomes``
and trust tiers in ``trust``. SQL lives in ``kiln.metadata``, never here.
"""

from kiln.metadata.db import Database
from kiln.metadata.records import LogChunk
from kiln.scheduler.context import RunContext
from kiln.scheduler.outcomes import JobOutcome, combine
from kiln.scheduler.retry import RetryPolicy
from kiln.scheduler.service import Scheduler
from kiln.scheduler.trust import TrustTier, trust_tier_of
from kiln.scheduler.views import (
    AttemptView,
    Heartbeat,
    JobView,
    LeasedJob,
    LogCursor,
    LogLine,
    LogPage,
    ReclaimedAttempt,
    RunSummary,
    RunView,
    StepView,
)

__all__ = [
    "AttemptView",
    "Database",
    "Heartbeat",
    "JobOutcome",
    "JobView",
    "LeasedJob",
    "LogChunk",
    "LogCursor",
    "LogLine",
    "LogPage",
    "ReclaimedAttempt",
    "RetryPolicy",
    "RunContext",
    "RunSummary",
    "RunView",
    "Scheduler",
    "StepView",
    "TrustTier",
    "combine",
    "trust_tier_of",
]
