"""Checks that span jobs: ``needs`` (only earlier jobs), ``image`` (a known image), images' ``from``.

These cannot be field validators: a job does not know its own name or the jobs around it. They
run twice on purpose. :func:`kiln.spec.parse_workflow` runs them on the raw YAML data, so they are
reported together with every other problem even when pydantic rejects something else (a model's
"after" validator only runs once all its fields are valid). ``Workflow`` runs them again after
validation, so a workflow built from JSON keeps the same invariant. Hence the tolerance of
malformed input below: whatever is not the expected shape is pydantic's to report.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping

from kiln.spec.loader import Loc

__all__ = ["BUILTIN_IMAGES", "nearest", "reference_problems"]

#: Images every kiln provides; custom ones come from the top-level `images:`.
BUILTIN_IMAGES = ("host", "busybox")


def nearest(word: str, choices: list[str]) -> str | None:
    """Return the choice closest to ``word`` (a likely typo), or ``None`` if none is close."""
    matches = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return matches[0] if matches else None


def reference_problems(data: object) -> list[tuple[Loc, str]]:
    """Find ``needs`` that name unknown or later jobs, and images that do not exist.

    Parameters
    ----------
    data
        The workflow as plain data (YAML-loaded or dumped): ``{"jobs": {name: {"needs": [...],
        "image": ...}}}``. Parts of another shape are skipped.

    Returns
    -------
    list[tuple[Loc, str]]
        One ``(path, message)`` per problem, in file order; the path is the offending value.
    """
    # Imported here: kiln.spec.images builds on this module's `nearest`.
    from kiln.spec.images import image_reference_problems, known_images

    found: list[tuple[Loc, str]] = []
    if isinstance(data, Mapping):
        found += image_reference_problems(data.get("images"))
    jobs = data.get("jobs") if isinstance(data, Mapping) else None
    if not isinstance(jobs, Mapping):
        return found
    custom = known_images(data)
    order = {name: index for index, name in enumerate(jobs)}
    for name, job in jobs.items():
        if not isinstance(job, Mapping):
            continue
        image = job.get("image")
        if isinstance(image, str) and image and image not in BUILTIN_IMAGES and image not in custom:
            found.append((("jobs", name, "image"), _unknown_image(image, custom)))
        needs = job.get("needs")
        # `needs: lint` is accepted as `needs: [lint]`; its path is then the key itself.
        entries: list[tuple[Loc, object]] = (
            [(("jobs", name, "needs"), needs)]
            if isinstance(needs, str)
            else [(("jobs", name, "needs", i), item) for i, item in enumerate(needs)]
            if isinstance(needs, list)
            else []
        )
        seen: set[str] = set()
        for loc, needed in entries:
            if not isinstance(needed, str):
                continue
            if needed == name:
                found.append((loc, f"`{name}` cannot need itself"))
            elif needed in seen:
                found.append((loc, f"`{needed}` is listed twice"))
            elif needed not in order:
                found.append((loc, _unknown_job(needed, [str(n) for n in order])))
            elif order[needed] > order[name]:
                found.append(
                    (
                        loc,
                        f"needs `{needed}`, which runs after `{name}` "
                        f"(jobs run in file order: move `{needed}` above `{name}`)",
                    )
                )
            seen.add(needed)
    return found


def _unknown_job(needed: str, jobs: list[str]) -> str:
    guess = nearest(needed, jobs)
    hint = f"did you mean `{guess}`?" if guess else "jobs: " + ", ".join(f"`{j}`" for j in jobs)
    return f"needs unknown job `{needed}`; {hint}"


def _unknown_image(image: str, custom: list[str]) -> str:
    guess = nearest(image, [*BUILTIN_IMAGES, *custom])
    if guess:
        return f"unknown image `{image}`; did you mean `{guess}`?"
    defined = ", ".join(f"`{name}`" for name in custom) if custom else "none"
    return (
        f"unknown image `{image}`; the built-in images are `host` and `busybox`, and the images "
        f"defined under `images:` are: {defined}"
    )
