"""kiln's main job: run the example workflow cold, then warm, and show what was reused.

The workflow (examples/c-and-deps) builds a C program from sources that Python code generates
with PyPI packages, tests the program it receives as an artifact, and packs a release on a custom
image. Cold means a fresh KILN_HOME: nothing stored yet, so pip downloads, gcc compiles and the
image is built. Warm is the same workflow again on the same KILN_HOME: the wheels, the compiler
cache and the build tree restore from caches, and every image layer is reused. The table at the
end compares the two runs job by job and says what each warm job reused.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / "examples" / "c-and-deps" / "kiln.yml"
KILN = ROOT / ".venv" / "bin" / "kiln"


def run(home: Path, label: str) -> tuple[dict, float]:
    print(f"\n=== {label} run (KILN_HOME={home}) ===", flush=True)
    env = {**os.environ, "KILN_HOME": str(home)}
    started = time.monotonic()
    proc = subprocess.run(
        [str(KILN), "run", "--json", str(WORKFLOW)], env=env, stdout=subprocess.PIPE, text=True
    )
    elapsed = time.monotonic() - started
    if proc.returncode != 0:
        print(proc.stdout)
        sys.exit(f"demo: the {label} run failed with exit code {proc.returncode}")
    return json.loads(proc.stdout), elapsed


def reused(job: dict) -> str:
    """What a warm job got from earlier work: cache restores, image layers, artifacts."""
    parts = [f"cache {c['name']}: {c['restore']}" for c in job["caches"]]
    image = job["image"]
    if "layers" in image:
        parts.append(f"image {image['name']}: {image['layers_reused']}/{image['layers']} layers reused")
    parts += [f"artifact {a['name']} of {a['from_job']}" for a in job["artifacts"] if a.get("from_job")]
    return ", ".join(parts) or "nothing declared"


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="kiln-demo-") as tmp:
        home = Path(tmp) / "home"
        cold, cold_s = run(home, "cold")
        warm, warm_s = run(home, "warm")
    print("\n=== what the warm run saved ===")
    print(f"{'job':<12}{'cold s':>9}{'warm s':>9}{'warm/cold':>11}   reused (warm)")
    for c, w in zip(cold["jobs"], warm["jobs"], strict=True):
        ratio = w["duration_s"] / c["duration_s"] if c["duration_s"] else 0.0
        print(f"{c['name']:<12}{c['duration_s']:>9.2f}{w['duration_s']:>9.2f}{ratio:>11.2f}   {reused(w)}")
    print(f"{'whole run':<12}{cold_s:>9.2f}{warm_s:>9.2f}{warm_s / cold_s:>11.2f}   (including start-up)")
    for c, w in zip(cold["jobs"], warm["jobs"], strict=True):
        for cache in w["caches"]:
            cold_cache = next(x for x in c["caches"] if x["name"] == cache["name"])
            print(f"  {c['name']}: cache {cache['name']} ({cache['type']}): cold {cold_cache['restore']}, "
                  f"warm {cache['restore']} from {cache.get('matched_scope') or '-'} "
                  f"({cache.get('restored_bytes', 0) / 1024:.0f} KiB in {cache.get('restore_s', 0):.2f}s), "
                  f"save {cache['save']}")  # fmt: skip


if __name__ == "__main__":
    main()
