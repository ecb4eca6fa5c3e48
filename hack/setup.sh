#!/usr/bin/env bash
# Prepare a fresh Debian machine for building and testing kubeup:
# Debian packages listed in hack/apt/*.txt, Rust components. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

[[ $(id -u) == 0 ]] || { echo "hack/setup.sh: run as root (it installs Debian packages)" >&2; exit 1; }

mapfile -t wanted < <(cat hack/apt/*.txt | sed 's/#.*//' | tr -s ' \t' '\n' | grep -v '^$' | sort -u)
missing=()
for p in "${wanted[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "==> apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

command -v cargo >/dev/null || { echo "hack/setup.sh: cargo not found; install Rust with rustup" >&2; exit 1; }
command -v go >/dev/null || { echo "hack/setup.sh: go not found; install Go >= 1.24" >&2; exit 1; }
rustup component add rustfmt clippy >/dev/null 2>&1 || true
echo "==> setup done"
