#!/usr/bin/env bash
# Benchmark `kubeup up` on a fresh sandbox host (bundle cached): the cold
# run to a ready control plane and a Ready node, then a re-run on the
# converged host; then `kubeup join --wait` of a second host right after
# `up` returned (up waits for the operator to lead, so nothing of the join
# is spent waiting for it). Prints the figures and the ratio of "units
# started → apiserver ready" to the lower bound measured by hand here (3.5 s).
set -euo pipefail
cd "$(dirname "$0")/.."
source hack/env.sh
cargo build --quiet --bin kubeup
kubeup="$CARGO_TARGET_DIR/debug/kubeup"
dir=$(mktemp -d /tmp/kubeup-bench-XXXXXX)
trap '"$kubeup" sandbox down --dir "$dir" >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT
"$kubeup" sandbox up --hosts 2 --dir "$dir" >/dev/null

phase() { # phase NAME < json lines → seconds
  python3 -c 'import json,sys; n=sys.argv[1]
for l in sys.stdin:
    try: e=json.loads(l)
    except ValueError: continue
    if e.get("phase")==n and e.get("event")=="done": print("%.2f" % e["elapsedSeconds"])' "$1"
}
t0=$(date +%s.%N); "$kubeup" up -f "$dir/cluster.yaml" -o json >"$dir/cold.json"; t1=$(date +%s.%N)
"$kubeup" up -f "$dir/cluster.yaml" -o json >"$dir/warm.json"; t2=$(date +%s.%N)
cold=$(echo "$t1 - $t0" | bc); warm=$(echo "$t2 - $t1" | bc)
# The images are imported while the apiserver starts (both phases begin
# when the units are started): units started -> /readyz spans the units
# and control-plane-ready phases.
api=$(echo "$(phase units <"$dir/cold.json") + $(phase "control plane ready" <"$dir/cold.json")" | bc)
node=$(phase "node ready" <"$dir/cold.json")
printf 'up cold (fresh host, bundle cached): %.1f s   (goal <= 60 s)\n' "$cold"
printf '  units started -> apiserver /readyz: %s s   = %.2fx the 3.5 s lower bound\n' "$api" "$(echo "$api / 3.5" | bc -l)"
printf '  apiserver ready -> controller Node Ready: %s s\n' "$node"
printf 'up again, converged host: %.2f s   (goal <= 2 s)\n' "$warm"
grep -q '"uploaded":\[\]' "$dir/warm.json" && echo "  (re-run changed nothing)"
printf '  operator running and leading (last phase of up): %s s\n' "$(phase "operator leading" <"$dir/cold.json")"
# A join applied the moment `up` returned.
"$kubeup" sandbox down --dir "$dir" >/dev/null 2>&1 || true
"$kubeup" sandbox up --hosts 2 --dir "$dir" >/dev/null
"$kubeup" up -f "$dir/cluster.yaml" >/dev/null
t3=$(date +%s.%N)
"$kubeup" join root@198.18.0.12 --key "$dir/sandbox/id_ed25519" --accept-new --wait -f "$dir/cluster.yaml" >"$dir/join.txt"
t4=$(date +%s.%N)
printf 'kubeup join --wait straight after up (fresh host): %.1f s\n' "$(echo "$t4 - $t3" | bc)"
