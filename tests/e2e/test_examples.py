"""Every example workflow in ``examples/`` runs with ``kiln run``, and the main one is faster warm.

The examples are what a user tries first and what the README's demo runs; they must keep working.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.sandbox

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
WORKFLOWS = sorted(
    path
    for pattern in ("*.yml", "*/kiln.yml")
    for path in EXAMPLES.glob(pattern)
    if path.parent.name != "c-and-deps"  # run cold and warm below
)


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: str(p.relative_to(EXAMPLES)))
def test_example_runs_to_success(kiln, workflow: Path):
    result = kiln("run", "--json", str(workflow), timeout=300)
    assert result.code == 0, result.stderr[-4000:]
    assert {job["status"] for job in result.summary["jobs"]} == {"success"}


def test_main_example_reuses_caches_image_and_artifacts_when_warm(kiln):
    """The README demo's workflow: the warm run restores every cache and builds no image layer."""
    workflow = EXAMPLES / "c-and-deps" / "kiln.yml"
    cold = kiln("run", "--json", str(workflow), timeout=600)  # pip downloads from PyPI
    assert cold.code == 0, cold.stderr[-4000:]
    warm = kiln("run", "--json", str(workflow), timeout=600)
    assert warm.code == 0, warm.stderr[-4000:]

    cold_jobs = {job["name"]: job for job in cold.summary["jobs"]}
    warm_jobs = {job["name"]: job for job in warm.summary["jobs"]}
    assert list(warm_jobs) == ["build", "test", "release"]
    assert {c["name"]: c["restore"] for c in cold_jobs["build"]["caches"]} == dict.fromkeys(
        ("wheels", "ccache", "objects"), "miss"
    )
    assert {c["name"]: c["restore"] for c in warm_jobs["build"]["caches"]} == dict.fromkeys(
        ("wheels", "ccache", "objects"), "hit"
    )
    # Nothing changed, so nothing new is stored: deps/compiler compare content, build is write-once.
    assert {c["save"] for c in warm_jobs["build"]["caches"]} == {"unchanged"}

    assert cold_jobs["release"]["image"]["layers_built"] == cold_jobs["release"]["image"]["layers"] > 0
    assert warm_jobs["release"]["image"]["layers_built"] == 0
    assert warm_jobs["release"]["image"]["digest"] == cold_jobs["release"]["image"]["digest"]

    # The program reaches the later jobs as the same verified artifact in both runs.
    (app,) = [a for a in warm_jobs["build"]["artifacts"] if a["name"] == "app"]
    for job in ("test", "release"):
        (received,) = [a for a in warm_jobs[job]["artifacts"] if a.get("from_job") == "build"]
        assert received["state"] == "extracted" and received["digest"] == app["digest"]
    (cold_app,) = [a for a in cold_jobs["build"]["artifacts"] if a["name"] == "app"]
    assert cold_app["digest"] == app["digest"], "a cache hit built a different program"
