"""How a job's image definition reaches its runner: an *image plan* in the job's stored spec.

At submit, the control plane adds to the spec of every job on a custom image::

    "image_plan": {"image": "toolchain", "images": {<the image and those it builds on>},
                   "lock": {<the kiln.lock entries they use>}}

The lease hands it to the runner beside the job (``LeaseOut.image_plan``), which builds from it;
the runner needs nothing else of the workflow. Entries the lock lacks are resolved on the runner
and come back in the job's report (``image.lock``), for ``kiln run`` to write into kiln.lock.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kiln.images.lockfile import Lock
from kiln.spec import Job, Workflow
from kiln.spec.images import Image, image_chain

__all__ = ["IMAGE_PLAN_KEY", "ImagePlan", "image_plan", "split_spec", "with_image_plan"]

IMAGE_PLAN_KEY = "image_plan"


@dataclass(frozen=True)
class ImagePlan:
    """What a runner builds: the image, the images it is built from, their lock entries."""

    image: str
    images: dict[str, Image]
    lock: Lock

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ImagePlan:
        images = {str(name): Image.model_validate(value) for name, value in dict(data["images"]).items()}
        return cls(str(data["image"]), images, Lock.from_json(data.get("lock") or {"kiln_lock": 1}))

    def to_json(self) -> dict[str, Any]:
        return {
            "image": self.image,
            "images": {name: image.model_dump(mode="json") for name, image in self.images.items()},
            "lock": self.lock.to_json(),
        }


def image_plan(workflow: Workflow, job: Job, lock: Lock | None) -> ImagePlan | None:
    """The plan of ``job``'s image, or ``None`` when it runs on a built-in image."""
    if job.image not in workflow.images:
        return None
    chain = image_chain(workflow.images, job.image)
    images = {name: workflow.images[name] for name in chain}
    bases = [image.from_ for image in images.values()]
    return ImagePlan(job.image, images, (lock or Lock()).subset(bases, chain))


def with_image_plan(workflow: Workflow, job: Job, lock: Mapping[str, Any] | None) -> dict[str, Any]:
    """The spec a job is stored with: its JSON form plus, on a custom image, the image plan.

    Raises
    ------
    UsageError
        ``lock`` is not a kiln lock file.
    """
    spec = job.model_dump(mode="json")
    plan = image_plan(workflow, job, Lock.from_json(lock, source="the submitted kiln.lock") if lock else None)
    if plan is not None:
        spec[IMAGE_PLAN_KEY] = plan.to_json()
    return spec


def split_spec(spec: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """A stored job spec → the job as the spec models read it, and its image plan (if any)."""
    job = dict(spec)
    plan = job.pop(IMAGE_PLAN_KEY, None)
    return job, plan
