#!/usr/bin/env bash
# Run every test, as CI does. On a fresh Debian/Ubuntu machine this first installs what the tests
# need: Prometheus and promtool from apt (the tests start their own Prometheus on loopback).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then
  echo "==> installing prometheus (for the real-Prometheus tests)"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
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
