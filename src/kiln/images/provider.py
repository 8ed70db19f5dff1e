"""The runner's image provider: a job's ``image:`` → the root its sandbox runs on.

Built-in images (``host``, ``busybox``) come from :mod:`kiln.images.builtin`. A custom image comes
with the lease as an image plan (:mod:`kiln.images.plan`) and is built here, as part of the job:
layers the runner has are used as they are, layers the control plane has are downloaded, the rest
are built in the sandbox and published for every later job. The job's summary gets an ``image``
section: name, digest, layers built and reused, build time, and the lock entries resolved.

A build that fails is reported the same way (with ``failure``) and ends the job with ``error``:
its steps never run on a half-built image. A build the job's cancel stopped
(:mod:`kiln.images.cancel`) is no failure of the image: it is not reported, and the job ends
``cancelled``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

from kiln.api.models import LeaseOut
from kiln.errors import JobError, KilnError
from kiln.images.builder import ImageBuilder
from kiln.images.builtin import builtin_image
from kiln.images.cancel import BuildCancel, BuildCancelled
from kiln.images.layers import LayerCache
from kiln.images.plan import ImagePlan
from kiln.images.remote import RemoteLayerStore
from kiln.images.steps import BuildSite, StepFailed
from kiln.runner.client import ControlPlaneClient
from kiln.runner.workspace import fetch_source, fresh_workspace
from kiln.sandbox import RootFS
from kiln.spec import Job

__all__ = ["ImageProvider"]


class ImageProvider:
    """``(job, lease, log, cancel) → RootFS`` for :class:`kiln.runner.executor.JobExecutor`.

    Parameters
    ----------
    client
        The control-plane client (layer records, blobs, the source snapshot).
    state_dir
        The runner's state directory (the same the executor uses).
    """

    def __init__(self, client: ControlPlaneClient, state_dir: Path) -> None:
        self._client = client
        self._state_dir = state_dir

    def __call__(self, job: Job, lease: LeaseOut, log: Callable[[str], None], cancel: BuildCancel) -> RootFS:
        if lease.image_plan is None:
            return builtin_image(job.image, self._state_dir / "images")
        plan = ImagePlan.from_json(lease.image_plan)
        cache = LayerCache(self._state_dir / "images")
        context = cache.context(lease.source_digest, lambda dest: fresh_workspace(self._source(lease), dest))
        site = BuildSite(
            cache=cache,
            sandbox_dir=self._state_dir / "sandbox",
            source=context,
            mount_scope=f"{lease.context.tenant}\0{lease.context.repo}",
            log=log,
            timeout_s=job.timeout_s,
            cancel=cancel,
        )
        store = RemoteLayerStore(
            self._client, lease.attempt_id, lease.lease_token, lease.trust_tier, self._state_dir / "spool"
        )
        builder = ImageBuilder(site, store, plan.lock)
        try:
            built = builder.build(plan.images, plan.image)
        except BuildCancelled:
            raise
        except KilnError as exc:
            self._report_failure(lease, plan, exc)
            raise
        report = built.report()
        if built.lock_changes:
            report["lock"] = plan.lock.to_json()
        self._client.report(lease.attempt_id, lease.lease_token, "image", report)
        return built.rootfs

    def _source(self, lease: LeaseOut) -> Path:
        return fetch_source(self._client, lease.source_digest, self._state_dir / "sources", lease.lease_token)

    def _report_failure(self, lease: LeaseOut, plan: ImagePlan, exc: KilnError) -> None:
        failure = {
            # The user's definition or code (a step failed, a copy source is missing) is exit 1;
            # an unreachable registry or a broken sandbox is kiln's side, exit 3.
            "kind": "user" if isinstance(exc, JobError) else "infrastructure",
            "reason": exc.message,
        }
        if isinstance(exc, StepFailed):
            failure["output"] = exc.output[-4000:]
        report = {"name": plan.image, "failure": failure}
        if plan.lock.changes:  # what was resolved before the failure is still worth keeping
            report["lock"] = plan.lock.to_json()
            report["lock_changes"] = list(plan.lock.changes)
        # The job ends with the build's error either way; a report that cannot be sent must not hide it.
        with contextlib.suppress(KilnError):
            self._client.report_image(lease.attempt_id, lease.lease_token, plan.image, "")
            self._client.report(lease.attempt_id, lease.lease_token, "image", report)
