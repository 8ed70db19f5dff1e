"""What do kiln's caches cost and save, compared with the obvious alternative, on the same machine?

Two questions, one run:

1. **Save and restore of a real dependency tree.** The installed files of a few dozen PyPI packages
   (``pip install --target``, once; kept in ``~/.cache/kiln-bench/deps-tree``) are saved and
   restored as a ``deps`` cache by kiln's own runner phase, exactly as in a job: key, manifest with
   a sha256 per file, secret scan, deterministic tar + multi-threaded zstd, upload through the
   control plane's grants into SeaweedFS, create-only commit; then lookup, download, digest check,
   the restore's safety checks, extraction to a staging folder and the move into place. The
   reference is what a CI script would do: ``tar -I 'zstd -T0'`` piped to a file and
   ``aws s3 cp`` to the same SeaweedFS bucket, and back. Ratio kiln / reference, per direction.
   Each repetition uses a fresh control plane and key prefix, so nothing is deduplicated.
2. **An example workflow, cold then warm.** ``examples/c-and-deps`` (pip wheels in a ``deps``
   cache, ccache in a ``compiler`` cache, make's tree in a ``build`` cache) runs with ``kiln run``
   on a fresh ``KILN_HOME`` and then again: warm / cold of the job and of the whole command, on the
   file store and on SeaweedFS. The cold run downloads wheels from PyPI.

Reproduce (from the repository root; starts its own SeaweedFS on free loopback ports)::

    .venv/bin/python bench/bench_caches.py              # 3 repetitions
    .venv/bin/python bench/bench_caches.py --repeat 1   # quicker

Prints tables and writes ``bench/results/caches.json``. Timings are medians over the repetitions.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # for tests.fixtures.seaweedfs, which knows how to start the server

from bench.bench_storage import timed  # noqa: E402
from tests.fixtures.seaweedfs import SeaweedFS, start_seaweedfs, stop_seaweedfs  # noqa: E402

from kiln.api.app import create_app  # noqa: E402
from kiln.api.models import RunContextIn, SubmitIn  # noqa: E402
from kiln.api.plane import open_control_plane  # noqa: E402
from kiln.api.server import BackgroundServer  # noqa: E402
from kiln.caches.phase import CachePhase  # noqa: E402
from kiln.runner import ControlPlaneClient  # noqa: E402
from kiln.runner.phases import JobContext  # noqa: E402
from kiln.sandbox import RootFS  # noqa: E402
from kiln.source import snapshot_source  # noqa: E402
from kiln.spec import Job  # noqa: E402

RESULTS = REPO / "bench" / "results" / "caches.json"
TREE = Path.home() / ".cache" / "kiln-bench" / "deps-tree"
# A few dozen real packages, some pure Python, some with compiled extensions (numpy, pydantic-core,
# greenlet, markupsafe, pyyaml, charset-normalizer): a realistic site-packages.
PACKAGES = [
    "requests", "urllib3", "idna", "certifi", "charset-normalizer", "jinja2", "markupsafe", "pyyaml",
    "click", "rich", "pygments", "markdown-it-py", "mdurl", "attrs", "six", "python-dateutil", "pytz",
    "tzdata", "packaging", "pluggy", "iniconfig", "pytest", "sqlalchemy", "greenlet", "typing-extensions",
    "pydantic", "pydantic-core", "annotated-types", "numpy", "docutils", "babel", "toml", "wheel",
]  # fmt: skip
WORKFLOW = """name: bench
jobs:
  deps:
    caches:
      - {name: site, type: deps, paths: [site]}
    steps: [{run: "true"}]
"""
EXAMPLE = REPO / "examples" / "c-and-deps" / "kiln.yml"


def dependency_tree() -> tuple[Path, list[str]]:
    """Install the packages once (network: PyPI); return the folder and what is in it."""
    if not (TREE / ".complete").exists():
        shutil.rmtree(TREE, ignore_errors=True)
        TREE.mkdir(parents=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
             "--target", str(TREE / "site"), *PACKAGES],
            check=True,
        )  # fmt: skip
        (TREE / ".complete").write_text("")
    versions = sorted(p.name.removesuffix(".dist-info") for p in (TREE / "site").glob("*.dist-info"))
    return TREE / "site", versions


def tree_size(root: Path) -> tuple[int, int]:
    files = total = 0
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            files += 1
            total += path.stat().st_size
    return files, total


class Plane:
    """A control plane on SQLite and a fresh SeaweedFS prefix, served on loopback as in ``kiln run``."""

    def __init__(self, work: Path, weed: SeaweedFS) -> None:
        self.work = work
        work.mkdir(parents=True)
        self.plane = open_control_plane(
            f"sqlite:///{work / 'kiln.db'}",
            weed.url(f"bench-caches-{uuid.uuid4().hex[:10]}"),
            spool_dir=work / "spool",
            api_token=secrets.token_urlsafe(16),
        )
        self.server = BackgroundServer(create_app(self.plane)).start()
        self.client = ControlPlaneClient(self.server.url, self.plane.api_token)
        project = work / "project"
        project.mkdir()
        (project / "kiln.yml").write_text(WORKFLOW)
        snapshot = snapshot_source(project, work)
        self.client.upload_source(snapshot.info.digest, snapshot.archive)
        self.source = snapshot.info.digest

    def job(self, workspace: Path) -> tuple[JobContext, CachePhase]:
        """A leased attempt of the one-job workflow, and a context over ``workspace``."""
        run = self.client.submit(
            SubmitIn(context=RunContextIn(repo="bench"), workflow_text=WORKFLOW, source_digest=self.source)
        )
        lease = self.client.lease("bench-runner", run.run_id)
        assert lease is not None
        ctx = JobContext(
            lease=lease,
            job=Job.model_validate(lease.spec),
            client=self.client,
            rootfs=RootFS(name="bench", digest="sha256:" + "b" * 64, layers=()),
            sandbox=None,  # type: ignore[arg-type]  (a workspace path never needs the overlay)
            workspace=workspace,
            spool_dir=self.work / "runner-spool",
            log=lambda line: None,
            secrets={"BENCH_TOKEN": secrets.token_urlsafe(24)},  # scanned for, never found
        )
        return ctx, CachePhase()

    def close(self) -> None:
        self.client.close()
        self.server.stop()


def kiln_round(work: Path, weed: SeaweedFS, tree: Path) -> tuple[float, float, dict[str, Any]]:
    """Save ``tree`` as a deps cache, then restore it into an empty workspace: (save s, restore s)."""
    plane = Plane(work, weed)
    try:
        saver = work / "ws-save"
        saver.mkdir()
        shutil.copytree(tree, saver / "site", symlinks=True)
        subprocess.run(["cat", *map(str, (saver / "site").rglob("*.py"))], stdout=subprocess.DEVNULL)  # warm
        ctx, phase = plane.job(saver)
        phase.before_steps(ctx)
        save = timed(lambda: phase.after_steps(ctx, succeeded=True))
        saved = ctx.report["caches"][0]
        assert saved["save"] == "saved", saved

        restorer = work / "ws-restore"
        restorer.mkdir()
        ctx, phase = plane.job(restorer)
        restore = timed(lambda: phase.before_steps(ctx))
        restored = ctx.report["caches"][0]
        assert restored["restore"] == "hit", restored
        assert tree_size(restorer / "site") == tree_size(tree)
        return save, restore, saved
    finally:
        plane.close()


def reference_round(work: Path, weed: SeaweedFS, tree: Path) -> tuple[float, float, int]:
    """``tar -I 'zstd -T0'`` + ``aws s3 cp``, up and back down: (save s, restore s, archive bytes)."""
    env = weed.env()
    aws = str(Path(sys.executable).with_name("aws"))
    key = f"s3://{weed.bucket}/bench-caches-aws-{uuid.uuid4().hex[:10]}/site.tar.zst"
    archive, back, dest = work / "site.tar.zst", work / "back.tar.zst", work / "restored"
    work.mkdir(parents=True)

    def save() -> None:
        subprocess.run(
            ["tar", "-I", "zstd -T0", "-cf", str(archive), "-C", str(tree.parent), tree.name], check=True
        )
        subprocess.run([aws, "s3", "cp", str(archive), key, "--endpoint-url", weed.endpoint, "--quiet"],
                       env=env, check=True)  # fmt: skip

    def restore() -> None:
        subprocess.run([aws, "s3", "cp", key, str(back), "--endpoint-url", weed.endpoint, "--quiet"],
                       env=env, check=True)  # fmt: skip
        dest.mkdir()
        subprocess.run(["tar", "-I", "zstd -d -T0", "-xf", str(back), "-C", str(dest)], check=True)

    up = timed(save)
    down = timed(restore)
    assert tree_size(dest / tree.name) == tree_size(tree)
    return up, down, archive.stat().st_size


def example_runs(storage_env: dict[str, str]) -> dict[str, Any]:
    """``kiln run`` of the example on a fresh KILN_HOME, cold then warm."""
    kiln = str(Path(sys.executable).with_name("kiln"))
    with tempfile.TemporaryDirectory(prefix="kiln-bench-example-") as home:
        env = {**os.environ, **storage_env, "KILN_HOME": home}
        runs = {}
        for label in ("cold", "warm"):
            started = time.perf_counter()
            proc = subprocess.run(
                [kiln, "run", "--json", str(EXAMPLE)], env=env, stdout=subprocess.PIPE, text=True
            )
            wall = time.perf_counter() - started
            if proc.returncode != 0:
                sys.exit(f"bench: the {label} run of {EXAMPLE} failed:\n{proc.stdout}")
            # The example also tests and packs the program; its caches are all in the build job.
            job = next(j for j in json.loads(proc.stdout)["jobs"] if j["name"] == "build")
            runs[label] = {
                "command_s": round(wall, 3),
                "job_s": job["duration_s"],
                "steps": {s["name"]: s["duration_s"] for s in job["steps"]},
                "caches": {c["name"]: {k: c.get(k) for k in ("restore", "save", "restore_s", "save_s")}
                           for c in job["caches"]},
            }  # fmt: skip
    runs["warm_over_cold_job"] = round(runs["warm"]["job_s"] / runs["cold"]["job_s"], 3)
    runs["warm_over_cold_command"] = round(runs["warm"]["command_s"] / runs["cold"]["command_s"], 3)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="repetitions of part 1 (default 3)")
    parser.add_argument("--skip-example", action="store_true", help="only part 1")
    options = parser.parse_args()

    tree, versions = dependency_tree()
    files, size = tree_size(tree)
    work = Path(tempfile.mkdtemp(prefix="kiln-bench-caches-"))
    weed = start_seaweedfs(work / "seaweedfs", volume_size_limit_mb=256)
    os.environ.update(weed.env())  # the in-process control plane's S3 credentials
    try:
        kiln_save, kiln_restore, ref_save, ref_restore = [], [], [], []
        saved: dict[str, Any] = {}
        ref_bytes = 0
        for n in range(options.repeat):
            s, r, saved = kiln_round(work / f"kiln-{n}", weed, tree)
            kiln_save.append(s)
            kiln_restore.append(r)
            s, r, ref_bytes = reference_round(work / f"ref-{n}", weed, tree)
            ref_save.append(s)
            ref_restore.append(r)
            for leftover in (work / f"kiln-{n}", work / f"ref-{n}"):
                shutil.rmtree(leftover, ignore_errors=True)
        example = {}
        if not options.skip_example:
            example["file"] = example_runs({})
            example["seaweedfs"] = example_runs(
                {**weed.env(), "KILN_STORAGE_URL": weed.url(f"bench-example-{uuid.uuid4().hex[:8]}")}
            )
    finally:
        stop_seaweedfs(weed)
        shutil.rmtree(work, ignore_errors=True)

    median = statistics.median
    part1 = {
        "tree": {"packages": len(versions), "files": files, "bytes": size},
        "kiln": {
            "save_s": round(median(kiln_save), 3),
            "restore_s": round(median(kiln_restore), 3),
            "archive_bytes": saved.get("saved_archive_bytes"),
        },
        "tar_zstd_aws": {
            "save_s": round(median(ref_save), 3),
            "restore_s": round(median(ref_restore), 3),
            "archive_bytes": ref_bytes,
        },
        "ratio_save": round(median(kiln_save) / median(ref_save), 3),
        "ratio_restore": round(median(kiln_restore) / median(ref_restore), 3),
        "ratio_total": round(
            (median(kiln_save) + median(kiln_restore)) / (median(ref_save) + median(ref_restore)), 3
        ),
        "samples_s": {
            "kiln_save": kiln_save,
            "kiln_restore": kiln_restore,
            "reference_save": ref_save,
            "reference_restore": ref_restore,
        },
    }  # fmt: skip

    cpus = os.cpu_count()
    print(f"\n1. dependency tree: {len(versions)} packages, {files} files, {size / 1e6:.1f} MB, {cpus} CPUs")
    print(f"{'':<28}{'save s':>9}{'restore s':>11}{'archive MB':>12}")
    print(
        f"{'kiln deps cache':<28}{part1['kiln']['save_s']:>9.2f}{part1['kiln']['restore_s']:>11.2f}"
        f"{(saved.get('saved_archive_bytes') or 0) / 1e6:>12.1f}"
    )
    print(
        f"{'tar zstd -T0 + aws s3 cp':<28}{part1['tar_zstd_aws']['save_s']:>9.2f}"
        f"{part1['tar_zstd_aws']['restore_s']:>11.2f}{ref_bytes / 1e6:>12.1f}"
    )
    print(f"{'kiln / reference':<28}{part1['ratio_save']:>9.2f}{part1['ratio_restore']:>11.2f}"
          f"   (total {part1['ratio_total']:.2f})")  # fmt: skip
    for backend, runs in example.items():
        print(f"\n2. examples/c-and-deps on {backend}: cold job {runs['cold']['job_s']:.2f}s, warm job "
              f"{runs['warm']['job_s']:.2f}s, warm/cold {runs['warm_over_cold_job']:.2f} "
              f"(whole command {runs['cold']['command_s']:.2f}s → {runs['warm']['command_s']:.2f}s, "
              f"{runs['warm_over_cold_command']:.2f})")  # fmt: skip
        for name, cache in runs["warm"]["caches"].items():
            print(f"   warm {name}: {cache['restore']} in {cache['restore_s']:.2f}s, save {cache['save']}")

    sha = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "bench": "caches",
                "git_sha": sha,
                "machine": {
                    "platform": platform.platform(),
                    "cpus": os.cpu_count(),
                    "python": platform.python_version(),
                },
                "parameters": {"repeat": options.repeat, "packages": versions},
                "dependency_tree": part1,
                "example_c_and_deps": example,
            },
            indent=2,
        )
        + "\n"
    )  # fmt: skip
    print(f"\nwrote {RESULTS.relative_to(REPO)}")


if __name__ == "__main__":
    main()
