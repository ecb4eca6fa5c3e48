#!/usr/bin/env bash
# The test command: installs and builds everything it needs from nothing,
# then runs every check and test. Usage: hack/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source hack/env.sh
start=$SECONDS
step() { printf '\n==> [%4ss] %s\n' "$((SECONDS - start))" "$*"; }

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
