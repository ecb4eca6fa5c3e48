# Sourced by the hack/ scripts: caches live outside the clone so repeated
# runs are fast; nothing depends on them being there.
export KUBEUP_CACHE="${KUBEUP_CACHE:-$HOME/.cache/kubeup}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$KUBEUP_CACHE/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
mkdir -p "$KUBEUP_CACHE"
