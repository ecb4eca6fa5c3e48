#!/usr/bin/env bash
# Ingress benchmark on a 3-host sandbox (1 controller, 2 workers): HTTP
# requests/s from this machine (wrk, keep-alive) to one backend pod
# (`nettest http`, hack/bundle/testimage) on worker A
#   - through Traefik on worker A's host port 80 (`Host:` header), and
#   - straight to the pod IP (a /32 route to it via worker A, removed at
#     the end),
# and their ratio. Same client, same node, same backend: the difference is
# Traefik (and the portmap DNAT in front of it).
#
# Usage: hack/bench-ingress.sh [--dir D]   (D: an existing sandbox with its
# cluster up and workers joined; without it, one is brought up in a
# temporary directory and torn down at the end. Only one sandbox fits on a
# machine: run it under `flock /work/sandbox.lock` where others share it.)
# Env: SECONDS_PER_RUN (10), CONNECTIONS (32), THREADS (2).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/kubeup/target}
source hack/env.sh
DURATION=${SECONDS_PER_RUN:-10}
CONNECTIONS=${CONNECTIONS:-32}
THREADS=${THREADS:-2}
IMAGE=kubeup.dev/busybox:test
NS=bench-ingress
HOST=bench.ingress.test

# The load generator: Debian's wrk.
command -v wrk >/dev/null || { apt-get install -y -qq wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }; }

DIR=""
if [ "${1:-}" = "--dir" ]; then DIR=$2; fi

cargo build -q -p kubeup --bin kubeup
KUBEUP=$CARGO_TARGET_DIR/debug/kubeup
KUBECTL=$KUBEUP_BUNDLE/bin/kubectl
k() { "$KUBECTL" --kubeconfig "$DIR/admin.kubeconfig" "$@"; }

ROUTE=""
cleanup() {
  [ -n "$ROUTE" ] && ip route del $ROUTE 2>/dev/null || true
  if [ -n "${OWN_SANDBOX:-}" ]; then
    "$KUBEUP" sandbox down --dir "$DIR" >/dev/null 2>&1 || true
  else
    k delete namespace $NS --wait=false >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ -z "$DIR" ]; then
  DIR=$(mktemp -d)/cluster
  OWN_SANDBOX=1
  cargo xtask bundle >/dev/null
  cargo xtask image >/dev/null
  "$KUBEUP" sandbox up --hosts 3 --dir "$DIR" >/dev/null 2>&1
  "$KUBEUP" up -f "$DIR/cluster.yaml" >/dev/null 2>&1
  k apply -f "$DIR/workers/" >/dev/null
  for _ in $(seq 300); do
    [ "$(k get nodes --no-headers 2>/dev/null | grep -c ' Ready ')" = 3 ] && break
    sleep 1
  done
fi

read -r A < <(k get nodes -l '!node-role.kubernetes.io/control-plane' \
  -o jsonpath='{.items[0].metadata.name}'; echo)
[ -n "$A" ] || { echo "need a Ready worker" >&2; exit 1; }
A_IP=$(k get node "$A" -o jsonpath='{.status.addresses[?(@.type=="InternalIP")].address}')

k create namespace $NS --dry-run=client -o yaml | k apply -f - >/dev/null
k apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata: {name: backend, namespace: $NS, labels: {app: backend}}
spec:
  nodeName: $A
  containers:
  - {name: http, image: $IMAGE, imagePullPolicy: Never, command: [/bin/nettest, http, ":8080", "bench"]}
---
apiVersion: v1
kind: Service
metadata: {name: backend, namespace: $NS}
spec:
  selector: {app: backend}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: backend, namespace: $NS}
spec:
  rules:
  - host: $HOST
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: backend, port: {number: 80}}}}
EOF
k -n $NS wait --for=condition=Ready pod/backend --timeout=120s >/dev/null
k -n kube-system rollout status daemonset/traefik --timeout=180s >/dev/null
POD_IP=$(k -n $NS get pod backend -o jsonpath='{.status.podIP}')
ROUTE="$POD_IP/32 via $A_IP"
ip route replace $ROUTE

# Both paths answer before measuring (routes and Traefik's config settle).
for _ in $(seq 60); do
  curl -fsS --max-time 2 -H "Host: $HOST" "http://$A_IP/" >/dev/null 2>&1 &&
    curl -fsS --max-time 2 "http://$POD_IP:8080/" >/dev/null 2>&1 && break
  sleep 1
done

rps() { # URL [header]: requests/s of one wrk run
  local args=(-t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s")
  [ -n "${2:-}" ] && args+=(-H "$2")
  wrk "${args[@]}" "$1" | awk '/^Requests\/sec:/ {print $2}'
}
# Warm both, then measure one after the other.
rps "http://$A_IP/" "Host: $HOST" >/dev/null
rps "http://$POD_IP:8080/" >/dev/null
INGRESS=$(rps "http://$A_IP/" "Host: $HOST")
DIRECT=$(rps "http://$POD_IP:8080/")
echo "wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s from this machine to a pod on $A:"
printf '  %-46s %10.0f req/s\n' "through the ingress (Traefik, $A_IP:80)" "$INGRESS"
printf '  %-46s %10.0f req/s\n' "straight to the pod IP ($POD_IP:8080)" "$DIRECT"
printf '  %-46s %10.2f\n' "ratio ingress/direct" "$(echo "$INGRESS / $DIRECT" | bc -l)"
