#!/usr/bin/env bash
# The real-cluster test tier: creates a throw-away kind (or k3d) cluster, runs the tests marked
# `#[ignore = "needs a Kubernetes cluster"]` against it, and deletes the cluster. The operator
# and a Prometheus run on this machine; they reach the cluster through its kubeconfig.
# Needs: docker, kind or k3d, and what ./scripts/test.sh installs (prometheus).
set -euo pipefail
cd "$(dirname "$0")/.."
NAME=fulfillment-test
export KUBECONFIG="${TMPDIR:-/tmp}/$NAME.kubeconfig"
if command -v kind >/dev/null; then
  kind create cluster --name "$NAME" --wait 120s
  trap 'kind delete cluster --name "$NAME"' EXIT
elif command -v k3d >/dev/null; then
  k3d cluster create "$NAME" --wait
  trap 'k3d cluster delete "$NAME"' EXIT
else
  echo "needs kind or k3d on PATH" >&2
  exit 2
fi
cargo test --test cluster -- --ignored --test-threads=1
