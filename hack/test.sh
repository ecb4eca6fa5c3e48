#!/usr/bin/env bash
# The test command: installs and builds everything it needs from nothing,
# then runs every check and test. Usage: hack/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source hack/env.sh
start=$SECONDS
step() { printf '\n==> [%4ss] %s\n' "$((SECONDS - start))" "$*"; }

# The sandbox hosts live on this machine's disk and each one's preflight wants
# 2 GiB free on /var; a cargo cache that has grown over many runs must not
# eat that. Incremental state is only worth keeping between edits, not in CI.
if [[ ${CI:-} == true ]]; then export CARGO_INCREMENTAL=0; fi
free_gib() { df --output=avail -B1G "$1" | tail -1 | tr -d ' '; }
mkdir -p "$CARGO_TARGET_DIR"
if (($(free_gib "$CARGO_TARGET_DIR") < 15)); then
  echo "test: less than 15 GiB free; pruning the cargo cache in $CARGO_TARGET_DIR" >&2
  rm -rf "$CARGO_TARGET_DIR/debug/incremental"
  if (($(free_gib "$CARGO_TARGET_DIR") < 15)); then rm -rf "$CARGO_TARGET_DIR/debug"; fi
fi

step "setup (Debian packages, Rust components)"
hack/setup.sh

step "format"
cargo fmt --all -- --check

step "generated CRDs are current"
cargo xtask crdgen --check

step "Kubernetes bundle (cached in $KUBEUP_CACHE/bundle)"
cargo xtask bundle

step "operator image (into the bundle) and the chart's rendering is current"
cargo xtask image
cargo xtask chart --check

step "clippy"
cargo clippy --workspace --all-targets -- -D warnings

step "tests"
cargo test --workspace --no-fail-fast -- --test-threads="${KUBEUP_TEST_THREADS:-2}"

step "all checks passed"
