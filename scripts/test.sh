#!/usr/bin/env bash
# Run every test, as CI does. On a fresh Debian/Ubuntu machine this first installs what the tests
# need: Prometheus and promtool from apt (the tests start their own Prometheus on loopback), the
# real Kubernetes control plane (kube-apiserver, kube-controller-manager, etcd) and helm built from
# their Go modules into a cache outside the clone (scripts/control-plane.sh; needs Go >= 1.25,
# ~15 min the first time, nothing after), and a Python virtualenv with Helm's Go SDK
# (helm-python-sdk) for the chart tests. Last, every fuzz target runs for FUZZ_SECONDS (30 s) each.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=""
command -v prometheus >/dev/null && command -v promtool >/dev/null || PACKAGES="prometheus"
python3 -m venv --help >/dev/null 2>&1 || PACKAGES="$PACKAGES python3-venv"
# libFuzzer (scripts/fuzz.sh) is C++, built by libfuzzer-sys.
command -v c++ >/dev/null || PACKAGES="$PACKAGES g++"
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

for tool in kubectl go; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "error: '$tool' is not installed; the end-to-end tests run the operator against a real" >&2
    echo "       kube-apiserver built from source (Go >= 1.25) and drive it with kubectl. Install $tool and re-run." >&2
    exit 2
  fi
done
echo "==> the real control plane (scripts/control-plane.sh build; cached by version)"
FO_CONTROL_PLANE_BIN="$(./scripts/control-plane.sh build)"
export FO_CONTROL_PLANE_BIN
"$FO_CONTROL_PLANE_BIN/kube-apiserver" --version
"$FO_CONTROL_PLANE_BIN/etcd" --version | head -n 1
"$FO_CONTROL_PLANE_BIN/helm" version --short

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --quiet -- -D warnings
echo "==> cargo test --all-targets"
cargo test --all-targets
echo "==> cargo test --doc"
cargo test --doc --quiet
echo "==> chart tests (Helm's own Go SDK, no helm CLI needed)"
VENV=target/chart-venv
if ! "$VENV/bin/python" -c "import helm_python, pytest, yaml" 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q -r tests/chart-requirements.txt
fi
"$VENV/bin/pytest" -q tests/chart_test.py
echo "==> fuzzing (scripts/fuzz.sh: every target for ${FUZZ_SECONDS:-30} s)"
./scripts/fuzz.sh "${FUZZ_SECONDS:-30}"
