"""kiln's main job: run the example project's workflow cold, then warm, and show what was reused.

Cold means a fresh KILN_HOME: nothing stored yet. Warm is the same workflow again on the same
KILN_HOME: the source snapshot is already stored (content-addressed, so not uploaded again), the
built-in image is already prepared, and, as the caching issues land, caches and image layers
restore instead of rebuilding. The table at the end compares the two runs job by job.
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
WORKFLOW = ROOT / "examples" / "python-project" / "kiln.yml"
KILN = ROOT / ".venv" / "bin" / "kiln"


def run(home: Path, label: str) -> tuple[dict, float]:
    print(f"\n=== {label} run (KILN_HOME={home}) ===", flush=True)
    env = {**os.environ, "KILN_HOME": str(home)}
    started = time.monotonic()
    proc = subprocess.run([str(KILN), "run", "--json", str(WORKFLOW)], env=env, stdout=subprocess.PIPE, text=True)
    elapsed = time.monotonic() - started
    if proc.returncode != 0:
        print(proc.stdout)
        sys.exit(f"demo: the {label} run failed with exit code {proc.returncode}")
    return json.loads(proc.stdout), elapsed


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="kiln-demo-") as tmp:
        home = Path(tmp) / "home"
        cold, cold_s = run(home, "cold")
        warm, warm_s = run(home, "warm")
    print("\n=== what the warm run saved ===")
    print(f"{'job':<16}{'cold s':>9}{'warm s':>9}{'warm/cold':>11}   caches (warm)")
    for c, w in zip(cold["jobs"], warm["jobs"], strict=True):
        ratio = w["duration_s"] / c["duration_s"] if c["duration_s"] else 0.0
        caches = ", ".join(f"{x['name']}: {x['restore']}" for x in w["caches"]) or "none declared"
        print(f"{c['name']:<16}{c['duration_s']:>9.2f}{w['duration_s']:>9.2f}{ratio:>11.2f}   {caches}")
    print(f"{'whole run':<16}{cold_s:>9.2f}{warm_s:>9.2f}{warm_s / cold_s:>11.2f}   (including start-up)")


if __name__ == "__main__":
    main()
