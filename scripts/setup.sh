#!/usr/bin/env bash
# Set up everything kiln needs on a fresh Debian 12 machine (run as root): the system packages the
# sandbox, images and tests use, a virtualenv in .venv, and kiln installed into it with its dev extras.
# Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  git bubblewrap busybox-static util-linux zstd ccache gcc make   # the sandbox and the example builds
  skopeo umoci mmdebstrap docker-registry                         # image layers and a local registry
)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: missing system packages: ${missing[*]}; run this script as root to install them" >&2
    exit 3
  fi
  echo "setup: installing ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # The Debian registry package starts a daemon where an init system exists; tests start their own.
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.kiln-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[dev]'
  touch "$stamp"
fi
echo "setup: ready ($(.venv/bin/kiln --version))" >&2
