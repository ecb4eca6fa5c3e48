#!/usr/bin/env bash
# Pod network benchmark on a 3-host sandbox (1 controller, 2 workers):
#   - TCP throughput worker A -> worker B, pod to pod (flannel VXLAN) and
#     host to host (hostNetwork pods: the same sandbox bridge, no overlay),
#     and their ratio;
#   - TCP connect latency from a pod to a ClusterIP Service whose backend
#     is on the other worker, and to that pod's IP directly.
# Measured by `nettest` from the smoke-test image (hack/bundle/testimage).
#
# Usage: hack/bench-network.sh [--dir D]   (D: an existing sandbox with
# its cluster up and workers joined; without it, one is brought up in a
# temporary directory and torn down at the end)
# Env: BYTES (default 1 GiB per run), RUNS (3), CONNECTS (500).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/kubeup/target}
CACHE=${KUBEUP_CACHE:-$HOME/.cache/kubeup}
BYTES=${BYTES:-1073741824}
RUNS=${RUNS:-3}
CONNECTS=${CONNECTS:-500}
IMAGE=kubeup.dev/busybox:test
NS=bench-network

DIR=""
if [ "${1:-}" = "--dir" ]; then DIR=$2; fi

cargo build -q -p kubeup --bin kubeup
KUBEUP=$CARGO_TARGET_DIR/debug/kubeup
source hack/env.sh
KUBECTL=$KUBEUP_BUNDLE/bin/kubectl

if [ -z "$DIR" ]; then
  DIR=$(mktemp -d)/cluster
  trap '"$KUBEUP" sandbox down --dir "$DIR" >/dev/null 2>&1 || true' EXIT
  cargo xtask bundle >/dev/null
  cargo xtask image >/dev/null
  "$KUBEUP" sandbox up --hosts 3 --dir "$DIR" >/dev/null 2>&1
  "$KUBEUP" up -f "$DIR/cluster.yaml" >/dev/null 2>&1
  k() { "$KUBECTL" --kubeconfig "$DIR/admin.kubeconfig" "$@"; }
  k apply -f "$DIR/workers/" >/dev/null
  for _ in $(seq 300); do
    [ "$(k get nodes --no-headers 2>/dev/null | grep -c ' Ready ')" = 3 ] && break
    sleep 1
  done
fi
k() { "$KUBECTL" --kubeconfig "$DIR/admin.kubeconfig" "$@"; }

read -r A B < <(k get nodes -l '!node-role.kubernetes.io/control-plane' \
  -o jsonpath='{.items[*].metadata.name}'; echo)
[ -n "$B" ] || { echo "need two Ready workers" >&2; exit 1; }

k create namespace $NS --dry-run=client -o yaml | k apply -f - >/dev/null
pod() { # name node hostNetwork command...
  local name=$1 node=$2 hostnet=$3; shift 3
  local cmd; cmd=$(printf '"%s",' "$@"); cmd=${cmd%,}
  cat <<EOF
apiVersion: v1
kind: Pod
metadata: {name: $name, namespace: $NS, labels: {app: $name}}
spec:
  nodeName: $node
  hostNetwork: $hostnet
  containers:
  - {name: main, image: $IMAGE, imagePullPolicy: Never, command: [$cmd]}
---
EOF
}
{
  pod server "$A" false /bin/nettest serve :5001
  pod client "$B" false /bin/busybox sleep 36000
  pod host-server "$A" true /bin/nettest serve :5002
  pod host-client "$B" true /bin/busybox sleep 36000
  cat <<EOF
apiVersion: v1
kind: Service
metadata: {name: server, namespace: $NS}
spec:
  selector: {app: server}
  ports: [{port: 5001, targetPort: 5001}]
EOF
} | k apply -f - >/dev/null
k -n $NS wait --for=condition=Ready pod --all --timeout=120s >/dev/null

server_ip=$(k -n $NS get pod server -o jsonpath='{.status.podIP}')
host_ip=$(k -n $NS get pod host-server -o jsonpath='{.status.podIP}')
svc_ip=$(k -n $NS get service server -o jsonpath='{.spec.clusterIP}')

# Best of RUNS, in MB/s.
best() { # pod addr
  local best=0 r
  for _ in $(seq "$RUNS"); do
    r=$(k -n $NS exec "$1" -- /bin/nettest send "$2" "$BYTES" | awk '{print $1}')
    best=$(awk -v a="$best" -v b="$r" 'BEGIN {print (b > a) ? b : a}')
  done
  echo "$best"
}

echo "pod network benchmark: $A -> $B, $BYTES bytes x $RUNS (best), $CONNECTS connects"
pod_bw=$(best client "$server_ip:5001")
host_bw=$(best host-client "$host_ip:5002")
echo "  TCP pod -> pod across nodes (VXLAN):   $pod_bw MB/s"
echo "  TCP host -> host (same bridge):        $host_bw MB/s"
awk -v p="$pod_bw" -v h="$host_bw" 'BEGIN {printf "  ratio pod/host:                       %.2f\n", p / h}'
echo "  pod -> ClusterIP $svc_ip (backend on $A):"
echo "    $(k -n $NS exec client -- /bin/nettest connect "$svc_ip:5001" "$CONNECTS")"
echo "  pod -> pod IP $server_ip (same backend, no Service):"
echo "    $(k -n $NS exec client -- /bin/nettest connect "$server_ip:5001" "$CONNECTS")"
k delete namespace $NS --wait=false >/dev/null
