#!/usr/bin/env bash
# Benchmark the highly available control plane (issue 18), side by side in
# one run on fresh sandbox hosts (bundle cached):
#   - `kubeup up` cold of 1 controller vs 3 controllers (the three converge
#     at once; ratio), each against the raw control-plane bound measured
#     here on the same hosts (files in place, start -> /readyz);
#   - API unavailability seen by a client of the virtual IP (requests every
#     50 ms) when the controller holding it is stopped, and when one that
#     does not hold it is stopped.
# Prints the figures; changes nothing outside its sandbox, removed at exit.
set -euo pipefail
cd "$(dirname "$0")/.."
source hack/env.sh
cargo build --quiet --bin kubeup
kubeup="$CARGO_TARGET_DIR/debug/kubeup"
kubectl="$KUBEUP_BUNDLE/bin/kubectl"
dir=$(mktemp -d /tmp/kubeup-bench-ha-XXXXXX)
trap '"$kubeup" sandbox down --dir "$dir" >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT

# CPU-seconds this machine spent busy so far (every core, every process:
# the sandbox hosts share the kernel).
busy() { awk -v hz="$(getconf CLK_TCK)" '/^cpu /{print ($2+$3+$4+$7+$8+$9)/hz}' /proc/stat; }
timed_up() { # timed_up CONTROLLERS → "seconds busy-cpu-seconds" of a cold `up`
  "$kubeup" sandbox down --dir "$dir" >/dev/null 2>&1 || true
  "$kubeup" sandbox up --hosts "$1" --controllers "$1" --dir "$dir" >/dev/null
  local t0 t1 b0 b1
  b0=$(busy); t0=$(date +%s.%N)
  "$kubeup" up -f "$dir/cluster.yaml" -o json >"$dir/up-$1.json"
  t1=$(date +%s.%N); b1=$(busy)
  echo "$(echo "$t1 - $t0" | bc) $(echo "$b1 - $b0" | bc)"
}

ssh_to() { sandbox_ssh "$dir" "$@"; }
controllers() { python3 -c 'import sys,yaml
for d in yaml.safe_load_all(open(sys.argv[1])):
    if d and d.get("kind")=="Cluster":
        for c in d["spec"]["controllers"]: print(c["address"])' "$dir/cluster.yaml"; }
# The raw control-plane bound on every controller at once, files in place:
# etcd, the apiserver, the controller-manager and the scheduler stopped,
# then started on all at once; seconds until every local /readyz answers
# (hosts' clock = this machine's: nspawn shares the kernel). Median of 3.
raw_control_plane() {
  local runs=() addrs a i pids p
  mapfile -t addrs < <(controllers)
  for _ in 1 2 3; do
    for a in "${addrs[@]}"; do
      ssh_to "$a" 'systemctl stop kube-scheduler kube-controller-manager kube-apiserver etcd'
    done
    pids=(); i=0
    for a in "${addrs[@]}"; do
      ssh_to "$a" 'date +%s.%N
        systemctl start --no-block etcd kube-apiserver kube-controller-manager kube-scheduler
        until curl -sf --max-time 1 --cacert /etc/kubernetes/pki/ca.crt https://127.0.0.1:6443/readyz >/dev/null; do sleep 0.05; done
        date +%s.%N' >"$dir/raw.$i" &
      pids+=($!); i=$((i + 1))
    done
    for p in "${pids[@]}"; do wait "$p"; done
    runs+=("$(python3 - "$dir"/raw.* <<'PY'
import sys
ts = [[float(l) for l in open(p).read().split()] for p in sys.argv[1:]]
print(round(max(t[1] for t in ts) - min(t[0] for t in ts), 2))
PY
)")
    rm -f "$dir"/raw.*
  done
  printf '%s\n' "${runs[@]}" | sort -n | sed -n 2p
}

read -r one cpu_one <<<"$(timed_up 1)"
raw_one=$(raw_control_plane)
read -r three cpu_three <<<"$(timed_up 3)"
raw_three=$(raw_control_plane)
# Healthy again (etcd, every apiserver, the address held) before the outages.
for _ in $(seq 90); do "$kubeup" status -f "$dir/cluster.yaml" >/dev/null 2>&1 && break; sleep 1; done
printf 'raw control-plane bound (files in place, start -> /readyz, median of 3): 1 controller %.2f s, 3 at once %.2f s = %.2fx (the machine: its hosts share %d cores)\n' \
  "$raw_one" "$raw_three" "$(echo "$raw_three / $raw_one" | bc -l)" "$(nproc)"
printf 'up cold, 1 controller:  %.1f s   = %.1fx that bound (aim <= 3x)\n' "$one" "$(echo "$one / $raw_one" | bc -l)"
printf 'up cold, 3 controllers: %.1f s   = %.2fx one controller (aim <= 1.5x); = %.1fx the 3-controller bound\n' \
  "$three" "$(echo "$three / $one" | bc -l)" "$(echo "$three / $raw_three" | bc -l)"
# The machine's bound for the ratio: the CPU work of 3 controllers' `up`
# cannot take less wall time than that work spread over every core.
cores=$(nproc)
printf 'CPU busy during up: 1 controller %.1f cpu-s (%.2f of %d cores), 3 controllers %.1f cpu-s (%.2f of %d cores)\n' \
  "$cpu_one" "$(echo "$cpu_one / $one" | bc -l)" "$cores" "$cpu_three" "$(echo "$cpu_three / $three" | bc -l)" "$cores"
printf '  3 controllers on %d cores: at least %.1f s = %.2fx one controller; up took %.2fx that\n' \
  "$cores" "$(echo "$cpu_three / $cores" | bc -l)" "$(echo "$cpu_three / $cores / $one" | bc -l)" \
  "$(echo "$three / ($cpu_three / $cores)" | bc -l)"
# Where the time goes: each phase's longest run over the hosts, side by side.
python3 - "$dir/up-1.json" "$dir/up-3.json" <<'PY'
import json, sys
def phases(path):
    out = {}
    for line in open(path):
        try: e = json.loads(line)
        except ValueError: continue
        if e.get("event") == "done" and e.get("elapsedSeconds") is not None:
            out[e["phase"]] = max(out.get(e["phase"], 0.0), e["elapsedSeconds"])
    return out
one, three = phases(sys.argv[1]), phases(sys.argv[2])
print("  phase (longest host)     1 ctl    3 ctl")
for p in dict.fromkeys(list(one) + list(three)):
    print(f"  {p:<24} {one.get(p, 0):6.1f} s {three.get(p, 0):6.1f} s")
PY

# Requests through the virtual IP while one controller is stopped.
probe() { # probe SECONDS → "ok failed outage_s"
  python3 - "$dir" "$kubectl" "$1" <<'PY'
import subprocess, sys, time
d, kubectl, secs = sys.argv[1], sys.argv[2], float(sys.argv[3])
ok = failed = 0; first = last = None; end = time.time() + secs
while time.time() < end:
    t = time.time()
    r = subprocess.run([kubectl, "--kubeconfig", d + "/admin.kubeconfig", "get", "--raw=/readyz",
                        "--request-timeout=1s"], capture_output=True)
    if r.returncode == 0: ok += 1
    else:
        failed += 1; first = first or t; last = time.time()
    time.sleep(0.05)
print(ok, failed, round((last - first) if first else 0.0, 2))
PY
}
holder() { "$kubeup" status -f "$dir/cluster.yaml" -o json | python3 -c 'import json,sys
s=json.load(sys.stdin); want=sys.argv[1]=="yes"
print(next(c["name"] for c in s["controllers"] if c["holdsEndpoint"]==want))' "$1"; }
outage() { # outage yes|no: stop the holder (yes) or a non-holder (no)
  local name; name=$(holder "$1")
  probe 14 >"$dir/probe" &
  sleep 2; "$kubeup" sandbox stop "$name" --dir "$dir" >/dev/null; wait
  read -r ok failed secs <"$dir/probe"
  "$kubeup" sandbox start "$name" --dir "$dir" >/dev/null
  for _ in $(seq 60); do "$kubeup" status -f "$dir/cluster.yaml" >/dev/null && break; sleep 1; done
  echo "$ok $failed $secs"
}
read -r ok failed secs <<<"$(outage yes)"
printf 'VIP holder stopped:     %s failed of %s requests, API out for %s s (aim <= 3 s)\n' "$failed" "$((ok + failed))" "$secs"
read -r ok failed secs <<<"$(outage no)"
printf 'non-holder stopped:     %s failed of %s requests, API out for %s s (aim: none failed)\n' "$failed" "$((ok + failed))" "$secs"
