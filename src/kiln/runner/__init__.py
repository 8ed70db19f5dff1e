"""The runner: stateless, talks to the control plane only over HTTP, runs jobs in the sandbox."""

from kiln.runner.client import ControlPlaneClient
from kiln.runner.executor import JobExecutor, JobResult
from kiln.runner.worker import Runner, default_runner_id

__all__ = ["ControlPlaneClient", "JobExecutor", "JobResult", "Runner", "default_runner_id"]
