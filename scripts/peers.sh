#!/usr/bin/env bash
# Builds the autoscalers the `versus` benchmark runs this operator against, from the Go module
# proxy, at pinned versions, into a cache outside the clone (a second run costs nothing):
#
#   prometheus-adapter           from sigs.k8s.io/prometheus-adapter    $ADAPTER_VERSION
#   keda, keda-adapter (opt.)    from github.com/kedacore/keda/v2       $KEDA_VERSION
#
# The real HPA itself is kube-controller-manager's horizontal-pod-autoscaler controller, built by
# scripts/control-plane.sh.
#
# Usage: scripts/peers.sh build        build prometheus-adapter if the cache lacks it, print the bin dir
#        scripts/peers.sh build-keda   the same for KEDA's operator and metrics API server
#        scripts/peers.sh keda-crds    print the directory of KEDA's CRDs (from its Go module)
#        scripts/peers.sh path         print the bin directory (exit 1 if prometheus-adapter is missing)
#
# Builds run with `nice -n 10` and GOFLAGS=-p=1 unless GOFLAGS is set: the project's machines
# are small and shared.
set -euo pipefail

ADAPTER_VERSION="${ADAPTER_VERSION:-v0.12.0}"
KEDA_VERSION="${KEDA_VERSION:-v2.21.0}"
CACHE="${FO_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/fulfillment-operator}"
BIN="$CACHE/peers-adapter-${ADAPTER_VERSION}-keda-${KEDA_VERSION}"
export GOFLAGS="${GOFLAGS:--p=1}"

need_go() {
  if ! command -v go >/dev/null 2>&1; then
    echo "error: Go is not installed; the versus benchmark builds prometheus-adapter (and KEDA) from source." >&2
    echo "fix:   install Go >= 1.25, then re-run." >&2
    exit 2
  fi
}

# go_build MODULE@VERSION PACKAGE OUTPUT: a throw-away wrapper module, so version selection is
# exactly the peer's own go.mod.
go_build() {
  local modver="$1" pkg="$2" out="$3" work
  work="$(mktemp -d)"
  (
    cd "$work"
    go mod init fulfillment-operator.test/peer >/dev/null 2>&1
    # The command's package, not just the module: go.sum then holds every dependency it builds with.
    nice -n 10 go get "$pkg@${modver#*@}"
    CGO_ENABLED=0 nice -n 10 go build -trimpath -ldflags "-s -w" -o "$out" "$pkg"
  ) >&2
  rm -rf "$work"
}

build_adapter() {
  [ -x "$BIN/prometheus-adapter" ] && return 0
  need_go
  mkdir -p "$BIN"
  local start=$SECONDS
  echo "==> building prometheus-adapter $ADAPTER_VERSION" >&2
  go_build "sigs.k8s.io/prometheus-adapter@$ADAPTER_VERSION" sigs.k8s.io/prometheus-adapter/cmd/adapter "$BIN/prometheus-adapter.tmp"
  mv "$BIN/prometheus-adapter.tmp" "$BIN/prometheus-adapter"
  echo "==> prometheus-adapter built in $((SECONDS - start)) s" >&2
}

# keda_dir: the directory of KEDA's module in the Go module cache (downloaded when missing).
keda_dir() {
  go mod download -json "github.com/kedacore/keda/v2@$KEDA_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p'
}

build_keda() {
  [ -x "$BIN/keda" ] && [ -x "$BIN/keda-adapter" ] && return 0
  need_go
  mkdir -p "$BIN"
  local start=$SECONDS src work
  echo "==> building keda $KEDA_VERSION (operator and metrics API server)" >&2
  # Inside a copy of KEDA's own module, not a wrapper: its go.mod has a `replace` that a wrapper
  # module would ignore.
  src="$(keda_dir)"
  [ -d "$src" ] || { echo "error: could not download github.com/kedacore/keda/v2@$KEDA_VERSION" >&2; exit 2; }
  work="$(mktemp -d)"
  cp -r "$src/." "$work" && chmod -R u+w "$work"
  (
    cd "$work"
    CGO_ENABLED=0 nice -n 10 go build -trimpath -ldflags "-s -w" -o "$BIN/keda.tmp" ./cmd/operator
    CGO_ENABLED=0 nice -n 10 go build -trimpath -ldflags "-s -w" -o "$BIN/keda-adapter.tmp" ./cmd/adapter
  ) >&2
  rm -rf "$work"
  mv "$BIN/keda.tmp" "$BIN/keda" && mv "$BIN/keda-adapter.tmp" "$BIN/keda-adapter"
  echo "==> keda built in $((SECONDS - start)) s" >&2
}

# keda_crds: the directory holding KEDA's CRDs, from the same module (never copied into the repo).
keda_crds() {
  local src
  src="$(keda_dir)"
  [ -d "$src/config/crd/bases" ] && echo "$src/config/crd/bases"
}

case "${1:-build}" in
  build) build_adapter; echo "$BIN" ;;
  build-keda) build_adapter; build_keda; echo "$BIN" ;;
  keda-crds) need_go; keda_crds ;;
  path) [ -x "$BIN/prometheus-adapter" ] && echo "$BIN" ;;
  *) echo "usage: $0 build|build-keda|keda-crds|path" >&2; exit 2 ;;
esac
