#!/usr/bin/env bash
# Benchmark a worker join through the operator on a fresh sandbox (bundle
# and operator image cached): WorkerJoin applied -> Node Ready for one host,
# next to the raw lower bound measured on the same host (files in place:
# stop kubelet, delete the Node, start kubelet -> Node Ready) and to a join
# of that host again with only its binaries left in place; then the
# other joins applied at once vs the one; one more join with 5 Nodes in the
# cluster vs the first with 1 (scale-out must stay flat); then the operator's
# RSS and CPU with 100 WorkerJoins that point at ports where nothing listens
# (they back off). Prints the figures and ratios.
# Ready moments come from one Node watch running all along (stamped as the
# events arrive); a raw start is timed from the host's clock right before
# `systemctl start kubelet` (nspawn hosts share this machine's clock), a
# join from the WorkerJoin's creation as a WorkerJoin watch sees it, once the
# cluster has settled (every Deployment available); the fresh and the
# pre-seeded join on the first host are each the median of 3.
#   KUBEUP_BENCH_HOSTS  sandbox hosts (default 6: 1 controller, 5 workers;
#                       hosts 3-5 join at once, host 6 joins last)
#   KUBEUP_BENCH_OPERATOR_LOG  file to keep the operator's log in
set -euo pipefail
cd "$(dirname "$0")/.."
source hack/env.sh
cargo build --quiet --bin kubeup
kubeup="$CARGO_TARGET_DIR/debug/kubeup"
hosts="${KUBEUP_BENCH_HOSTS:-6}"
dir=$(mktemp -d /tmp/kubeup-benchjoin-XXXXXX)
watcher=""
wj_watcher=""
cleanup() {
  [[ -n $watcher ]] && kill "$watcher" 2>/dev/null
  [[ -n $wj_watcher ]] && kill "$wj_watcher" 2>/dev/null
  "$kubeup" sandbox down --dir "$dir" >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT
# A signal ends the script through exit, so the EXIT trap runs.
trap 'exit 130' INT TERM
"$kubeup" sandbox up --hosts "$hosts" --dir "$dir" >/dev/null
"$kubeup" up -f "$dir/cluster.yaml" >/dev/null
kubectl() { "$KUBEUP_BUNDLE/bin/kubectl" --kubeconfig "$dir/admin.kubeconfig" "$@"; }
now() { date +%s.%N; }

mapfile -t files < <(ls "$dir"/workers/*.yaml)
# Node name of a worker file: the host's name (the WorkerJoin's metadata.name).
wj_name() { python3 -c 'import sys,yaml
for d in yaml.safe_load_all(open(sys.argv[1])):
    if d and d.get("kind")=="WorkerJoin": print(d["metadata"]["name"])' "$1"; }
address() { python3 -c 'import sys,yaml
for d in yaml.safe_load_all(open(sys.argv[1])):
    if d and d.get("kind")=="WorkerJoin": print(d["spec"]["address"])' "$1"; }
# Every Node event, stamped as it arrives: one watch for the whole run, so
# a Ready moment is taken when the apiserver sends it, by a process already
# running (no kubectl start-up and no polling inside a measurement).
events="$dir/node-events"
: > "$events"
kubectl get nodes --watch --output-watch-events \
  -o jsonpath='{.type} {.object.metadata.name} {.object.status.conditions[?(@.type=="Ready")].status}{"\n"}' \
  2>/dev/null > >(while read -r e n r; do echo "$(now) $e $n $r"; done >> "$events") &
watcher=$!
# Every WorkerJoin's creation, stamped the same way: a join is timed from
# the moment the apiserver has the object (what a GitOps sync or any client
# does), not from the start of the kubectl process that sends it (~0.15 s of
# its own on this machine, printed once below).
wj_events="$dir/workerjoin-events"
: > "$wj_events"
kubectl -n kubeup-system get workerjoins --watch --output-watch-events \
  -o jsonpath='{.type} {.object.metadata.name}{"\n"}' \
  2>/dev/null > >(while read -r e n; do echo "$(now) $e $n"; done >> "$wj_events") &
wj_watcher=$!
# When Node $1 was first seen Ready after time $2 (waits up to 120 s).
ready_after() {
  local t
  for _ in $(seq 1 2400); do
    t=$(awk -v n="$1" -v t0="$2" '$1 > t0 && $2 != "DELETED" && $3 == n && $4 == "True" {print $1; exit}' "$events")
    [[ -n $t ]] && { echo "$t"; return 0; }
    sleep 0.05
  done
  echo "Node $1 not Ready within 120 s" >&2; return 1
}
# Seconds from time $1 until every Node "${@:2}" was Ready.
all_ready_after() {
  local t0=$1 last=$1 t n; shift
  for n in "$@"; do
    t=$(ready_after "$n" "$t0") || return 1
    if (($(echo "$t > $last" | bc))); then last=$t; fi
  done
  echo "$last - $t0" | bc
}
# The Node of WorkerJoin $1, once the join is Ready.
joined_node() {
  if ! kubectl -n kubeup-system wait --for=jsonpath='{.status.phase}'=Ready "workerjoin/$1" --timeout=120s >/dev/null; then
    echo "timed out waiting for WorkerJoin $1" >&2
    kubectl -n kubeup-system get workerjoin "$1" -o yaml >&2
    kubectl -n kubeup-system logs deployment/kubeup-operator --tail=300 >&2 || true
    return 1
  fi
  kubectl -n kubeup-system get workerjoin "$1" -o jsonpath='{.status.nodeName}'
}
# Start the kubelet on the hosts "$@" at once; the earliest start time (the
# hosts' clock is this machine's: nspawn shares the kernel), without the
# SSH connection before it.
start_kubelets() {
  local i=0 a pids=() p
  for a in "$@"; do
    ssh_to "$a" 'date +%s.%N; systemctl start kubelet' > "$dir/started.$i" &
    pids+=($!)
    i=$((i + 1))
  done
  # Not a bare `wait`: the Node watch runs in the background too.
  for p in "${pids[@]}"; do wait "$p"; done
  sort -n "$dir"/started.* | head -1
  rm -f "$dir"/started.*
}

# When the first of WorkerJoins "${@:2}" was created after time $1.
created_after() {
  local t0=$1 first="" t n; shift
  for n in "$@"; do
    t=""
    for _ in $(seq 1 200); do
      t=$(awk -v n="$n" -v t0="$t0" '$1 > t0 && $2 == "ADDED" && $3 == n {print $1; exit}' "$wj_events")
      [[ -n $t ]] && break
      sleep 0.05
    done
    [[ -n $t ]] || { echo "WorkerJoin $n not seen created within 10 s" >&2; return 1; }
    if [[ -z $first ]] || (($(echo "$t < $first" | bc))); then first=$t; fi
  done
  echo "$first"
}
# Seconds from creating the WorkerJoins of worker files "$@" (one kubectl
# apply, as a GitOps sync would) to every one's Node Ready; the kubectl
# process's own time before the creation goes to $dir/apply-overhead.
join_time() {
  local t0 f created args=() names=() nodes=()
  for f in "$@"; do args+=(-f "$f"); names+=("$(wj_name "$f")"); done
  t0=$(now)
  kubectl apply "${args[@]}" >/dev/null
  created=$(created_after "$t0" "${names[@]}") || return 1
  echo "$created - $t0" | bc > "$dir/apply-overhead"
  for f in "$@"; do nodes+=("$(joined_node "$(wj_name "$f")")") || return 1; done
  all_ready_after "$created" "${nodes[@]}"
}

# The cluster settled: the operator and every add-on running (their pods
# start right after `up`, and would share the cores with the first join).
kubectl wait deployment --all -A --for=condition=Available --timeout=180s >/dev/null
# The median of the numbers "$@".
median() { printf '%s\n' "$@" | sort -n | sed -n "$(( ($# + 1) / 2 ))p"; }

# 1. One join (1 Node in the cluster: the controller).
first=${files[0]}
w1=$(wj_name "$first")
one=$(join_time "$first")
apply_overhead=$(cat "$dir/apply-overhead")
node1=$(kubectl -n kubeup-system get workerjoin "$w1" -o jsonpath='{.status.nodeName}')

# 2. The raw lower bound on the same host: binaries, configs and
#    certificates in place; stop the kubelet, delete the Node, start the
#    kubelet by hand, time to Ready (median of 3).
ssh_to() { sandbox_ssh "$dir" "$@"; }
# The raw bound is measured with the operator stopped: it would otherwise
# see the deleted Node, rejoin the host and start the kubelet itself.
replicas=$(kubectl -n kubeup-system get deployment/kubeup-operator -o jsonpath='{.spec.replicas}')
# The operator's log so far, kept when KUBEUP_BENCH_OPERATOR_LOG names a file
# (before each stop: a deleted pod's log is gone).
keep_operator_log() {
  if [[ -n ${KUBEUP_BENCH_OPERATOR_LOG:-} ]]; then
    kubectl -n kubeup-system logs deployment/kubeup-operator >> "$KUBEUP_BENCH_OPERATOR_LOG" 2>&1 || true
  fi
}
[[ -n ${KUBEUP_BENCH_OPERATOR_LOG:-} ]] && : > "$KUBEUP_BENCH_OPERATOR_LOG"
phases() {
  kubectl -n kubeup-system get workerjoins -o custom-columns='NAME:.metadata.name,PHASE:.status.phase,DURATIONS:.status.phaseDurations' 2>/dev/null || true
}
operator_off() {
  keep_operator_log
  kubectl -n kubeup-system scale deployment/kubeup-operator --replicas=0 >/dev/null
  kubectl -n kubeup-system wait pod -l app.kubernetes.io/name=kubeup-operator --for=delete --timeout=120s >/dev/null 2>&1 || true
}
operator_on() {
  kubectl -n kubeup-system scale deployment/kubeup-operator --replicas="$replicas" >/dev/null
  kubectl -n kubeup-system rollout status deployment/kubeup-operator --timeout=180s >/dev/null
  # Running is not leading: wait until a running pod holds the Lease.
  local pods holder
  for _ in $(seq 1 300); do
    pods=$(kubectl -n kubeup-system get pod -l app.kubernetes.io/name=kubeup-operator \
      --field-selector=status.phase=Running -o jsonpath='{.items[*].metadata.name}')
    holder=$(kubectl -n kubeup-system get lease kubeup-operator -o jsonpath='{.spec.holderIdentity}' 2>/dev/null || true)
    [[ -n $holder && " $pods " == *" $holder "* ]] && return 0
    sleep 0.1
  done
  echo "no operator took the Lease" >&2; return 1
}
# A kubelet started by hand registers its Node itself, without the
# WorkerJoin's ownership, and the operator never takes over a Node it does
# not own: record it again as the operator had (worker file $1, Node $2).
readopt() {
  local owner; owner="kubeup-system.$(wj_name "$1")"
  kubectl label node "$2" "kubeup.dev/workerjoin=$owner" --overwrite >/dev/null
  kubectl annotate node "$2" "kubeup.dev/workerjoin=$owner" --overwrite >/dev/null
}
# Raw bound on the host of worker file $1 (Node $2), three times, into $raws.
raw_bound() {
  raws=()
  for _ in 1 2 3; do
    ssh_to "$(address "$1")" systemctl stop kubelet
    kubectl delete node "$2" --wait=true >/dev/null
    t0=$(start_kubelets "$(address "$1")")
    raws+=("$(all_ready_after "$t0" "$2")")
  done
  readopt "$1" "$2"
}
operator_off
raw_bound "$first" "$node1"
raws1=("${raws[@]}")
raw=$(printf '%s\n' "${raws1[@]}" | sort -n | sed -n 2p)
operator_on

# 2a. The bytes' own floor: the files that host got, copied to it by OpenSSH
#     scp (with the cipher kubeup negotiates) in their final form, the
#     faster of two ways: as they are, or as the zstd copies this machine
#     keeps (where it has them), decompressed on the host afterwards. A
#     fresh join's floor is that plus the raw bound.
bytes_floor() {
  local addr=$1 names plain packed t0 t1 t2 t3
  mapfile -t names < <(ssh_to "$addr" 'cd /opt/kubeup/bundle/v* && find . -type f | sed "s|^\./||"')
  local_paths() { # local_paths zst|plain → a path for each of the host's files
    python3 - "$1" "$KUBEUP_BUNDLE" "${KUBEUP_CACHE:-$HOME/.cache/kubeup}/compressed" "${names[@]}" <<'PY'
import json, os, sys
how, bundle, cache, names = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
files = json.load(open(os.path.join(bundle, "bundle.json")))["files"]
for n in names:
    if n not in files:
        continue
    z = os.path.join(cache, files[n]["sha256"] + ".zst")
    print(z if how == "zst" and os.path.exists(z) else os.path.join(bundle, n))
PY
  }
  mapfile -t plain < <(local_paths plain)
  mapfile -t packed < <(local_paths zst)
  scp_to() { scp -q -c aes256-gcm@openssh.com -i "$dir/sandbox/id_ed25519" \
    -o UserKnownHostsFile="$dir/sandbox/known_hosts" -o StrictHostKeyChecking=yes -o BatchMode=yes "$@"; }
  ssh_to "$addr" 'rm -rf /tmp/kubeup-floor && mkdir -p /tmp/kubeup-floor/plain /tmp/kubeup-floor/zst'
  t0=$(now)
  scp_to "${plain[@]}" "root@$addr:/tmp/kubeup-floor/plain/"
  t1=$(now)
  scp_to "${packed[@]}" "root@$addr:/tmp/kubeup-floor/zst/"
  ssh_to "$addr" 'cd /tmp/kubeup-floor/zst && for f in *.zst; do [ -e "$f" ] && zstd -d -q --rm "$f"; done; true'
  t2=$(now)
  ssh_to "$addr" 'rm -rf /tmp/kubeup-floor'
  echo "$(echo "$t1 - $t0" | bc) $(echo "$t2 - $t1" | bc) $(du -cb "${plain[@]}" | tail -1 | cut -f1) $(du -cb "${packed[@]}" | tail -1 | cut -f1) ${#plain[@]}"
}
read -r scp_plain scp_packed plain_bytes packed_bytes scp_files < <(bytes_floor "$(address "$first")")
scp_secs=$(echo "if ($scp_plain < $scp_packed) $scp_plain else $scp_packed" | bc -l)

# 2b. The same join on a host whose binaries are already there (a machine
#     image with kubeup's bundle baked in): the WorkerJoin is deleted (the
#     operator drains, deletes the Node and resets the host), the bundle
#     directory put back as an image would have it, the WorkerJoin applied
#     again. What is left is the operator's own work: connect, preflight,
#     checksums, certificates, configuration, units, the kubelet's start.
# Leave only the bundle of the joined host of worker file $1.
seed_again() {
  local addr; addr=$(address "$1")
  ssh_to "$addr" 'cp -a /opt/kubeup/bundle /root/seeded-bundle'
  kubectl -n kubeup-system delete workerjoin "$(wj_name "$1")" --wait=true >/dev/null
  ssh_to "$addr" 'mkdir -p /opt/kubeup && rm -rf /opt/kubeup/bundle && mv /root/seeded-bundle /opt/kubeup/bundle'
}
seeded_runs=()
for _ in 1 2 3; do
  seed_again "$first"
  seeded_runs+=("$(join_time "$first")")
done
seeded=$(median "${seeded_runs[@]}")

# 2c. The fresh join twice more on that host (the WorkerJoin deleted, the
#     host reset with its binaries): the median of the three.
fresh_runs=("$one")
for _ in 1 2; do
  kubectl -n kubeup-system delete workerjoin "$w1" --wait=true >/dev/null
  fresh_runs+=("$(join_time "$first")")
done
one=$(median "${fresh_runs[@]}")

# 3. Three more workers at once (each a fresh host).
rest=("${files[@]:1:3}")
if ((${#rest[@]} > 0)); then
  many=$(join_time "${rest[@]}")
  many_phases=$(phases)
fi

# 3b. Those three again at once, pre-seeded as in 2b: the operator's own
#     scaling, without three uploads sharing two cores.
if ((${#rest[@]} > 0)); then
  pids=()
  for f in "${rest[@]}"; do seed_again "$f" & pids+=($!); done
  for p in "${pids[@]}"; do wait "$p"; done
  many_seeded=$(join_time "${rest[@]}")
fi

# 3c. The machine's own share of that: the raw lower bound of 2, on those
#     three hosts at once. Sandbox hosts share this machine's cores; real
#     ones each bring their own.
if ((${#rest[@]} > 0)); then
  operator_off
  rest_nodes=()
  for f in "${rest[@]}"; do
    rest_nodes+=("$(kubectl -n kubeup-system get workerjoin "$(wj_name "$f")" -o jsonpath='{.status.nodeName}')")
    ssh_to "$(address "$f")" systemctl stop kubelet
  done
  kubectl delete node "${rest_nodes[@]}" --wait=true >/dev/null
  addrs=()
  for f in "${rest[@]}"; do addrs+=("$(address "$f")"); done
  t0=$(start_kubelets "${addrs[@]}")
  raw_many=$(all_ready_after "$t0" "${rest_nodes[@]}")
  for i in "${!rest[@]}"; do readopt "${rest[$i]}" "${rest_nodes[$i]}"; done
  operator_on
fi

# 4. One more join with every earlier Node in the cluster.
if ((${#files[@]} > 4)); then
  last=${files[4]}
  existing=$(kubectl get nodes --no-headers | wc -l)
  later=$(join_time "$last")
  # The same raw bound on that host, with every Node there: the machine's
  # own share of any slow-down (the sandbox hosts' kubelets, kube-proxies
  # and flannels share its cores).
  operator_off
  raw_bound "$last" "$(kubectl -n kubeup-system get workerjoin "$(wj_name "$last")" -o jsonpath='{.status.nodeName}')"
  raw_later=$(printf '%s\n' "${raws[@]}" | sort -n | sed -n 2p)
  operator_on
fi

# 5. The operator with 100 WorkerJoins that back off (SSH ports on the first
#    worker where nothing listens), next to it idle: RSS and CPU time.
ssh_ctl() { ssh_to 198.18.0.11 "$@"; }
# RSS (KiB) and CPU seconds of the operator over 30 s.
usage() {
  ssh_ctl 'p=$(pgrep -x kubeup-operator | head -1); hz=$(getconf CLK_TCK)
    cpu() { awk -v hz="$hz" "{print (\$14+\$15)/hz}" /proc/$p/stat; }
    a=$(cpu); sleep 30; b=$(cpu)
    echo "$(awk "/VmRSS/{print \$2}" /proc/$p/status) $(awk -v a="$a" -v b="$b" "BEGIN{print b-a}")"'
}
read -r idle_rss idle_cpu < <(usage)
secret=$(python3 -c 'import sys,yaml
for d in yaml.safe_load_all(open(sys.argv[1])):
    if d and d.get("kind")=="WorkerJoin": print(d["spec"]["sshSecretRef"]["name"])' "$first")
w1_addr=$(address "$first")
{
  for i in $(seq 1 100); do
    cat <<YAML
---
apiVersion: kubeup.dev/v1alpha1
kind: WorkerJoin
metadata: {name: bench-absent-$i, namespace: kubeup-system}
spec:
  address: $w1_addr
  port: $((20000 + i))
  user: root
  sshSecretRef: {name: $secret}
  hostKey: {policy: AcceptNew}
YAML
  done
} > "$dir/absent.yaml"
kubectl apply -f "$dir/absent.yaml" >/dev/null
# Every one tried at least once, then measure while they back off.
for _ in $(seq 1 120); do
  tried=$(kubectl -n kubeup-system get workerjoins -o jsonpath='{range .items[*]}{.status.attempts}{"\n"}{end}' | awk '$1>0' | wc -l)
  ((tried >= 100)) && break
  sleep 1
done
read -r busy_rss busy_cpu < <(usage)
kubectl delete -f "$dir/absent.yaml" --wait=false >/dev/null

# kubelet-serving certificates: approved for every joined node.
serving=$(kubectl get csr -o jsonpath='{range .items[?(@.spec.signerName=="kubernetes.io/kubelet-serving")]}{.status.conditions[0].type}{" "}{end}')

printf 'join, WorkerJoin created -> Node Ready (1 host, median of 3: %s):  %.2f s   (goal <= 20 s; kubectl apply'"'"'s own start before the creation: %.2f s more)\n' "${fresh_runs[*]}" "$one" "$apply_overhead"
printf 'raw lower bound on that host (start kubelet -> Ready, median of 3: %s): %.2f s\n' "${raws1[*]}" "$raw"
printf 'ratio join / raw: %.1fx\n' "$(echo "$one / $raw" | bc -l)"
floor=$(echo "$scp_secs + $raw" | bc -l)
printf 'its %d files by scp: %d MB as they are %.2f s, or %d MB of zstd copies + decompressing on the host %.2f s\n' \
  "$scp_files" "$((plain_bytes / 1000000))" "$scp_plain" "$((packed_bytes / 1000000))" "$scp_packed"
printf 'fresh-join floor (the faster scp + raw): %.2f s; join / floor: %.2fx   (aim <= 1.2x)\n' \
  "$floor" "$(echo "$one / $floor" | bc -l)"
printf 'join with the binaries pre-seeded (machine image; median of 3: %s): %.2f s = %.2fx raw   (goal <= 1.5x)\n' \
  "${seeded_runs[*]}" "$seeded" "$(echo "$seeded / $raw" | bc -l)"
if [[ -n ${many:-} ]]; then
  printf '%d joins at once -> all Ready: %.2f s   = %.2fx one join   (goal <= 1.5x)\n' \
    "${#rest[@]}" "$many" "$(echo "$many / $one" | bc -l)"
fi
if [[ -n ${many_seeded:-} ]]; then
  printf '%d joins at once, binaries pre-seeded: %.2f s   = %.2fx one pre-seeded join   (goal <= 1.5x)\n' \
    "${#rest[@]}" "$many_seeded" "$(echo "$many_seeded / $seeded" | bc -l)"
fi
if [[ -n ${raw_many:-} ]]; then
  printf 'raw lower bound on %d hosts at once: %.2f s   = %.2fx one (the machine: its hosts share %d cores)\n' \
    "${#rest[@]}" "$raw_many" "$(echo "$raw_many / $raw" | bc -l)" "$(nproc)"
fi
if [[ -n ${later:-} ]]; then
  printf 'join with %d Nodes in the cluster: %.2f s vs %.2f s with 1   = %.2fx   (goal <= 1.1x)\n' \
    "$existing" "$later" "$one" "$(echo "$later / $one" | bc -l)"
  printf 'raw bound on that host then: %.2f s (%.2f s on the first with 1 Node); join / raw %.1fx vs %.1fx with 1 Node = %.2fx\n' \
    "$raw_later" "$raw" "$(echo "$later / $raw_later" | bc -l)" "$(echo "$one / $raw" | bc -l)" \
    "$(echo "($later / $raw_later) / ($one / $raw)" | bc -l)"
fi
printf 'operator, idle with %d joined Nodes: RSS %d MiB, CPU %.2f s per 30 s\n' \
  "$(kubectl get nodes --no-headers | wc -l)" "$((idle_rss / 1024))" "$idle_cpu"
printf 'operator, + 100 WorkerJoins backing off (%d tried): RSS %d MiB (goal <= 50 MiB), CPU %.2f s per 30 s (%.1f%% of a core)\n' \
  "$tried" "$((busy_rss / 1024))" "$busy_cpu" "$(echo "$busy_cpu / 30 * 100" | bc -l)"
echo "kubelet-serving CSRs: ${serving:-none}"
keep_operator_log
if [[ -n ${many_phases:-} ]]; then
  echo "phases of the ${#rest[@]} fresh joins at once:"
  echo "$many_phases"
fi
echo "phases of the last run of each:"
phases
