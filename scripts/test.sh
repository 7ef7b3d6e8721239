#!/usr/bin/env bash
# Run every test, as CI does. On a fresh Debian/Ubuntu machine this first installs what the tests
# need: Prometheus and promtool from apt (the tests start their own Prometheus on loopback), and a
# Python virtualenv with Helm's Go SDK (helm-python-sdk) for the chart tests.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=""
command -v prometheus >/dev/null && command -v promtool >/dev/null || PACKAGES="prometheus"
python3 -m venv --help >/dev/null 2>&1 || PACKAGES="$PACKAGES python3-venv"
if [ -n "$PACKAGES" ]; then
  echo "==> installing$PACKAGES"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $PACKAGES >/dev/null
fi
# The Debian package installs a service that is not started here; the tests run their own.
prometheus --version 2>&1 | head -n 1

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "==> cargo test --workspace --all-targets"
cargo test --workspace --all-targets
echo "==> cargo test --doc"
cargo test --workspace --doc --quiet
echo "==> chart tests (Helm's own Go SDK, no helm CLI needed)"
VENV=target/chart-venv
if ! "$VENV/bin/python" -c "import helm_python, pytest, yaml" 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q -r tests/chart-requirements.txt
fi
"$VENV/bin/pytest" -q tests/chart_test.py
