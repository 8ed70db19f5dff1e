#!/usr/bin/env bash
# Set everything up, then run every check: ruff, the import-layering contracts, and the whole test
# suite (unit, contract, integration against real PostgreSQL, SeaweedFS and the kernel sandbox, e2e).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

echo "== ruff" >&2
.venv/bin/ruff check src tests bench scripts
.venv/bin/ruff format --check src tests bench scripts
echo "== import layering" >&2
.venv/bin/lint-imports
echo "== tests" >&2
# A test whose service (PostgreSQL, SeaweedFS) or kernel feature is missing fails here, never skips.
export KILN_REQUIRE_SERVICES=1
.venv/bin/pytest -q -rs -p no:cacheprovider --durations=15 "$@"
