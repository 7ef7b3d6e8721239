#!/usr/bin/env bash
# Builds the real Kubernetes control plane the end-to-end tests run against, from the Go module
# proxy, at pinned versions, into a cache outside the clone (a second run costs nothing):
#
#   kube-apiserver, kube-controller-manager   from k8s.io/kubernetes   $KUBE_VERSION
#   etcd                                      from go.etcd.io/etcd      $ETCD_VERSION
#   helm                                      from helm.sh/helm/v3      $HELM_VERSION
#
# Usage: scripts/control-plane.sh build   build what the cache lacks, print the bin directory
#        scripts/control-plane.sh path    print the bin directory (exit 1 if incomplete)
#        scripts/control-plane.sh env     print `export FO_CONTROL_PLANE_BIN=...` for the tests
#
# k8s.io/kubernetes cannot be `go install`ed: its go.mod points ~31 staging modules at
# ./staging/... and requires them at v0.0.0. We build from a throw-away wrapper module that
# requires k8s.io/kubernetes and replaces every staging module with its published v0.Y.Z tag;
# the list is generated from Kubernetes' own go.mod, as are its `godebug` lines (they only
# apply in the main module). etcd and helm get wrapper modules of their own so version
# selection never moves Kubernetes' dependencies.
set -euo pipefail

KUBE_VERSION="${KUBE_VERSION:-v1.35.4}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
HELM_VERSION="${HELM_VERSION:-v3.22.0}"
CACHE="${FO_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/fulfillment-operator}"
BIN="$CACHE/control-plane-k8s-${KUBE_VERSION}-etcd-${ETCD_VERSION}-helm-${HELM_VERSION}"
BINARIES=(kube-apiserver kube-controller-manager etcd helm)

complete() {
  local b
  for b in "${BINARIES[@]}"; do [ -x "$BIN/$b" ] || return 1; done
}

need_go() {
  if ! command -v go >/dev/null 2>&1; then
    cat >&2 <<MSG
error: Go is not installed, and the end-to-end tests need the real kube-apiserver, etcd and
kube-controller-manager, which this script builds from source.
fix:   install Go >= 1.25 (Kubernetes $KUBE_VERSION asks for it; e.g. 'apt-get install golang-1.25'
       on a Debian with backports, or the toolchain your platform team ships), then re-run.
MSG
    exit 2
  fi
}

ldflags_version() {
  # gitVersion and friends in both places Kubernetes reads them; without them /version says
  # v0.0.0-master+$Format:%H$.
  local ver="$1" commit="$2" major minor pkg flags=""
  major="${ver#v}"; major="${major%%.*}"
  minor="${ver#v*.}"; minor="${minor%%.*}"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags="$flags -X $pkg.gitVersion=$ver -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
    flags="$flags -X $pkg.gitCommit=$commit -X $pkg.gitTreeState=clean"
    flags="$flags -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  echo "-s -w$flags"
}

build_kubernetes() {
  local work="$1" info gomod commit
  mkdir -p "$work/kube" && cd "$work/kube"
  info="$(go mod download -json "k8s.io/kubernetes@$KUBE_VERSION")"
  gomod="$(sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p' <<<"$info")"
  commit="$(sed -n 's/^[[:space:]]*"Hash": "\(.*\)",*$/\1/p' <<<"$info" | head -n 1)"
  local goline staging godebug
  goline="$(grep -m1 '^go ' "$gomod")"
  godebug="$(grep '^godebug ' "$gomod" || true)"
  # k8s.io/api => ./staging/src/k8s.io/api   becomes   k8s.io/api => k8s.io/api v0.35.4
  staging="$(sed -n 's#^[[:space:]]*\(k8s.io/[^ ]*\) => ./staging/.*#\1#p' "$gomod")"
  {
    echo "module fulfillment-operator.test/kube"
    echo
    echo "$goline"
    echo
    echo "$godebug"
    echo
    echo "require k8s.io/kubernetes $KUBE_VERSION"
    echo
    echo "replace ("
    local m
    for m in $staging; do echo "	$m => $m v0${KUBE_VERSION#v1}"; done
    echo ")"
  } >go.mod
  cat >tools.go <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
)
GO
  go mod tidy
  local flags
  flags="$(ldflags_version "$KUBE_VERSION" "$commit")"
  CGO_ENABLED=0 go build -trimpath -ldflags "$flags" -o "$BIN.tmp/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver
  CGO_ENABLED=0 go build -trimpath -ldflags "$flags" -o "$BIN.tmp/kube-controller-manager" k8s.io/kubernetes/cmd/kube-controller-manager
}

build_etcd() {
  local work="$1"
  mkdir -p "$work/etcd" && cd "$work/etcd"
  go mod init fulfillment-operator.test/etcd >/dev/null 2>&1
  go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION"
  CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$BIN.tmp/etcd" go.etcd.io/etcd/server/v3
}

build_helm() {
  local work="$1"
  mkdir -p "$work/helm" && cd "$work/helm"
  go mod init fulfillment-operator.test/helm >/dev/null 2>&1
  # The command's package, not just the module: go.sum then holds every dependency it builds with.
  go get "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  CGO_ENABLED=0 go build -trimpath \
    -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
    -o "$BIN.tmp/helm" helm.sh/helm/v3/cmd/helm
}

build() {
  if complete; then echo "$BIN"; return 0; fi
  need_go
  local start
  WORK="$(mktemp -d)"
  trap 'rm -rf "$WORK"' EXIT
  mkdir -p "$BIN.tmp"
  start=$SECONDS
  [ -x "$BIN.tmp/kube-apiserver" ] && [ -x "$BIN.tmp/kube-controller-manager" ] || {
    echo "==> building kube-apiserver and kube-controller-manager $KUBE_VERSION (cold: ~10-20 min on 2 cores)" >&2
    (build_kubernetes "$WORK") >&2
  }
  [ -x "$BIN.tmp/etcd" ] || { echo "==> building etcd $ETCD_VERSION" >&2; (build_etcd "$WORK") >&2; }
  [ -x "$BIN.tmp/helm" ] || { echo "==> building helm $HELM_VERSION" >&2; (build_helm "$WORK") >&2; }
  rm -rf "$BIN" && mv "$BIN.tmp" "$BIN"
  echo "==> control plane built in $((SECONDS - start)) s into $BIN" >&2
  echo "$BIN"
}

case "${1:-build}" in
  build) build ;;
  path) complete && echo "$BIN" ;;
  env) echo "export FO_CONTROL_PLANE_BIN=$(build)" ;;
  *) echo "usage: $0 build|path|env" >&2; exit 2 ;;
esac
