# Sourced by the hack/ scripts: caches live outside the clone so repeated
# runs are fast; nothing depends on them being there.
export KUBEUP_CACHE="${KUBEUP_CACHE:-$HOME/.cache/kubeup}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$KUBEUP_CACHE/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# The bundle `cargo xtask bundle` builds (provision's default_bundle_dir):
# named after the Kubernetes version and the digest of hack/bundle/parts.
KUBEUP_BUNDLE="$KUBEUP_CACHE/bundle/v1.34.10-$(sha256sum "$(dirname "${BASH_SOURCE[0]}")/bundle/parts" | cut -c1-8)"
export KUBEUP_BUNDLE
mkdir -p "$KUBEUP_CACHE"
# A command as root on sandbox host $2 of the sandbox in directory $1, its
# host key checked against the sandbox's known_hosts.
sandbox_ssh() {
  local dir=$1 addr=$2
  shift 2
  ssh -q -i "$dir/sandbox/id_ed25519" -o UserKnownHostsFile="$dir/sandbox/known_hosts" \
    -o StrictHostKeyChecking=yes -o BatchMode=yes "root@$addr" "$@"
}
