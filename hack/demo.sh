#!/usr/bin/env bash
# The main job on a fresh machine: prerequisites, the Kubernetes bundle,
# kubeup itself, three sandbox hosts, `kubeup up` on the first, the other two
# joined as workers by the operator, then `kubectl get nodes`.
# The sandbox keeps running; remove it with: kubeup sandbox down --dir DIR
set -euo pipefail
cd "$(dirname "$0")/.."
source hack/env.sh
dir="${KUBEUP_DEMO_DIR:-$KUBEUP_CACHE/demo}"

hack/setup.sh
cargo xtask bundle
cargo xtask image
cargo build --quiet --bin kubeup
kubeup="$CARGO_TARGET_DIR/debug/kubeup"
kubectl="$KUBEUP_BUNDLE/bin/kubectl --kubeconfig $dir/admin.kubeconfig"

# A previous demo's sandbox is replaced.
[[ -f $dir/sandbox/state.json ]] && "$kubeup" sandbox down --dir "$dir"
"$kubeup" sandbox up --hosts "${KUBEUP_DEMO_HOSTS:-3}" --dir "$dir"
"$kubeup" up -f "$dir/cluster.yaml"

# The operator joins every other host: apply their WorkerJoins (+ Secrets).
if compgen -G "$dir/workers/*.yaml" >/dev/null; then
  $kubectl apply -f "$dir/workers/"
  $kubectl -n kubeup-system wait workerjoin --all --for=jsonpath='{.status.phase}'=Ready --timeout=300s
fi
$kubectl get nodes -o wide
$kubectl get workerjoins -A 2>/dev/null || true
echo
echo "cluster directory: $dir   (kubectl: $kubectl)"
echo "remove the sandbox: $kubeup sandbox down --dir $dir"
