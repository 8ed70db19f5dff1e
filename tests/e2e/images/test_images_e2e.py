"""``kiln run`` and ``kiln images`` with custom images, through the real CLI in a subprocess."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from tests.fixtures.registry import Registry

pytestmark = pytest.mark.sandbox

TOOLS = {"tools/bin/hello": "#!/bin/sh\necho hello from the image\n"}
WORKFLOW = """
name: demo
images:
  tools:
    from: busybox
    steps:
      - run: echo built > /built.txt
      - copy: {src: tools/, dst: /opt/tools}
      - env: {PATH: "/opt/tools/bin:$PATH"}
jobs:
  build:
    image: tools
    steps:
      - run: hello && cat /built.txt
"""


def _project(project, workflow: str = WORKFLOW, files: dict[str, str] | None = None) -> Path:
    path = project(workflow, files if files is not None else TOOLS)
    hello = path.parent / "tools/bin/hello"
    if hello.exists():
        hello.chmod(0o755)
    return path


def test_a_job_runs_on_its_image_and_the_next_run_builds_nothing(kiln, project) -> None:
    workflow = _project(project)
    first = kiln("run", str(workflow), "--json")
    assert first.code == 0, first.stderr
    image = first.summary["jobs"][0]["image"]
    assert image["name"] == "tools" and image["layers_built"] == 3 and image["digest"].startswith("sha256:")
    assert "hello from the image" in first.stderr
    second = kiln("run", str(workflow), "--json")
    assert second.code == 0, second.stderr
    again = second.summary["jobs"][0]["image"]
    assert (again["layers_built"], again["layers_reused"], again["digest"]) == (0, 3, image["digest"])
    listed = kiln("images", "ls", "-f", str(workflow), "--json")
    assert json.loads(listed.stdout)[0]["digest"] == image["digest"]


def test_a_failing_build_step_ends_the_job_with_error_and_the_run_with_exit_1(kiln, project) -> None:
    broken = WORKFLOW.replace("run: echo built > /built.txt", 'run: "echo missing-compiler >&2; exit 3"')
    result = kiln("run", str(_project(project, broken)), "--json")
    assert result.code == 1, result.stderr
    job = result.summary["jobs"][0]
    assert job["status"] == "error"
    assert "image tools: step 1 (run: echo missing-compiler >&2; exit 3) failed (exit code 3)" in job["error"]
    assert "missing-compiler" in job["error"]
    assert job["image"]["failure"]["kind"] == "user"


def test_a_missing_copy_source_is_the_users_error(kiln, project) -> None:
    result = kiln("run", str(_project(project, files={})), "--json")
    assert result.code == 1, result.stderr
    assert "`tools` does not exist in the repository" in result.summary["jobs"][0]["error"]


def test_an_unreachable_registry_is_an_infrastructure_error(kiln, project) -> None:
    workflow = WORKFLOW.replace("from: busybox", "from: docker://127.0.0.1:9/nothing/here:1")
    result = kiln("run", str(_project(project, workflow)), "--json")
    assert result.code == 3, result.stderr
    job = result.summary["jobs"][0]
    assert job["status"] == "error"
    assert "is the registry at 127.0.0.1:9 reachable" in job["error"]


def test_an_image_the_registry_does_not_have_is_the_users_error(kiln, project, registry: Registry) -> None:
    workflow = WORKFLOW.replace("from: busybox", f"from: {registry.ref('nothing/here', '1')}")
    result = kiln("run", str(_project(project, workflow)), "--json")
    assert result.code == 1, result.stderr
    job = result.summary["jobs"][0]
    assert job["status"] == "error" and job["image"]["failure"]["kind"] == "user"
    assert f"the registry at {registry.host} has no such image" in job["error"]


def test_an_unknown_base_is_a_workflow_error_before_anything_runs(kiln, project) -> None:
    workflow = WORKFLOW.replace("from: busybox", "from: busybx")
    result = kiln("run", str(_project(project, workflow)), "--json")
    assert result.code == 2, result.stderr
    assert "images.tools.from: unknown base `busybx`; did you mean `busybox`?" in result.stderr


def test_an_exported_image_is_read_by_skopeo_and_umoci_and_runs_the_jobs_command(
    kiln, project, tmp_path: Path
) -> None:
    workflow = _project(project)
    layout = tmp_path / "layout"
    exported = kiln("images", "export", "tools", str(layout), "-f", str(workflow))
    assert exported.code == 0, exported.stderr
    digest = exported.stdout.split()[1]
    inspected = subprocess.run(
        ["skopeo", "inspect", f"oci:{layout}:tools"], capture_output=True, text=True, check=True
    )
    assert len(json.loads(inspected.stdout)["Layers"]) == 3
    config = subprocess.run(
        ["skopeo", "inspect", "--raw", "--config", f"oci:{layout}:tools"], capture_output=True, check=True
    ).stdout
    assert digest == "sha256:" + __import__("hashlib").sha256(config).hexdigest()
    bundle = tmp_path / "bundle"
    subprocess.run(
        ["umoci", "unpack", "--image", f"{layout}:tools", str(bundle)], capture_output=True, check=True
    )
    ran = subprocess.run(
        [
            "chroot",
            str(bundle / "rootfs"),
            "/bin/sh",
            "-c",
            "PATH=/opt/tools/bin:/bin; hello && cat /built.txt",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert ran.stdout == "hello from the image\nbuilt\n"


CACHED_COMPILER = """
name: compilers
images:
  cc-a:
    from: busybox
    steps:
      - run: printf '#!/bin/sh\\necho object-from-a\\n' > /bin/cc && chmod +x /bin/cc
  cc-b:
    from: busybox
    steps:
      - run: printf '#!/bin/sh\\necho object-from-b\\n' > /bin/cc && chmod +x /bin/cc
x-job: &job
  caches:
    - {name: objects, type: compiler, paths: ["~/.objects"], restore-keys: true}
  steps:
    - run: |
        mkdir -p ~/.objects
        if [ -f ~/.objects/main.o ]; then echo "restored: $(cat ~/.objects/main.o)"; fi
        test ! -f ~/.objects/main.o || [ "$(cat ~/.objects/main.o)" = "$(cc)" ]
        cc > ~/.objects/main.o
jobs:
  with-a: {<<: *job, image: cc-a}
  with-b: {<<: *job, image: cc-b}
"""


def test_jobs_on_images_with_other_compilers_never_restore_each_others_cache(kiln, project) -> None:
    workflow = project(CACHED_COMPILER)
    first = kiln("run", str(workflow), "--json")
    assert first.code == 0, first.stderr
    second = kiln("run", str(workflow), "--json")
    assert second.code == 0, second.stderr
    jobs = {job["name"]: job for job in second.summary["jobs"]}
    assert jobs["with-a"]["image"]["digest"] != jobs["with-b"]["image"]["digest"]
    for name in ("with-a", "with-b"):
        (cache,) = jobs[name]["caches"]
        assert cache["restore"] == "hit", cache
    assert "restored: object-from-a" in second.stderr and "restored: object-from-b" in second.stderr
