"""kiln's job sandbox: overlayfs + bubblewrap + cgroups, with nothing left behind.

See ``docs/design-sandbox.md`` for how a step is launched and why each flag is there.
"""

from kiln.sandbox.base import SANDBOX_HOME, WORKSPACE, Limits, RootFS, StepOutcome
from kiln.sandbox.job import JobSandbox
from kiln.sandbox.orphans import reap_orphans
from kiln.sandbox.probe import probe

__all__ = [
    "SANDBOX_HOME",
    "WORKSPACE",
    "JobSandbox",
    "Limits",
    "RootFS",
    "StepOutcome",
    "probe",
    "reap_orphans",
]
