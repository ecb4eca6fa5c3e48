#!/usr/bin/env bash
# Benchmark the highly available control plane (issue 18), side by side in
# one run on fresh sandbox hosts (bundle cached):
#   - `kubeup up` cold of 1 controller vs 3 controllers (the three converge
#     at once; ratio), and the 1-controller figure against the raw
#     control-plane bound measured here (~3.5 s to /readyz, files in place);
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

timed_up() { # timed_up CONTROLLERS → seconds of a cold `up`
  "$kubeup" sandbox down --dir "$dir" >/dev/null 2>&1 || true
  "$kubeup" sandbox up --hosts "$1" --controllers "$1" --dir "$dir" >/dev/null
  local t0 t1
  t0=$(date +%s.%N); "$kubeup" up -f "$dir/cluster.yaml" -o json >"$dir/up-$1.json"; t1=$(date +%s.%N)
  echo "$t1 - $t0" | bc
}

one=$(timed_up 1)
three=$(timed_up 3)
printf 'up cold, 1 controller:  %.1f s   = %.1fx the 3.5 s raw control-plane bound\n' "$one" "$(echo "$one / 3.5" | bc -l)"
printf 'up cold, 3 controllers: %.1f s   = %.2fx one controller (aim <= 1.5x)\n' "$three" "$(echo "$three / $one" | bc -l)"
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
