#!/usr/bin/env bash
# Set everything up, then run kiln's main job: the example Python project's workflow, cold (a fresh
# KILN_HOME) and then warm (the same KILN_HOME), and show what the second run reused.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python scripts/demo.py "$@"
