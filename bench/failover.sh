#!/usr/bin/env bash
# Failover time of two origins electing their primary on a real etcd (Debian's etcd-server):
# RUNS times, SIGKILL the primary (at a random point of its renewal cycle) while the standby is
# idle and time until the standby has published an ingest (the first `mhc-node ingest` it
# accepts), then restart the old primary as the standby; then RUNS times the same with SIGTERM
# (a planned stop: the lease is revoked, not left to expire). The floor of the first is the
# lease's TTL less the time since the last renewal (a standby cannot win before the dead
# primary's lease expires), so its figures are also given as ratios to the TTL. Last, RUNS
# planned switchovers (`mhc-node ha switchover` at the primary) timed from the command to the
# first ingest published at the former standby. The origins share a publisher key and the
# standby replicates the primary throughout, so each failover also carries the catalog over.
# Usage: bench/failover.sh [RUNS=10] [LEASE_TTL_S=5]
source "$(dirname "$0")/lib.sh"
runs=${1:-10} ttl=${2:-5}
command -v etcd >/dev/null || { echo "needs etcd (apt-get install etcd-server)" >&2; exit 1; }
build_release
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
client=$(free_port) peer=$(free_port)
etcd --name bench --data-dir "$work/etcd" \
  --listen-client-urls "http://127.0.0.1:$client" --advertise-client-urls "http://127.0.0.1:$client" \
  --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
  --initial-cluster "bench=http://127.0.0.1:$peer" > "$work/etcd.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
  curl -sf "http://127.0.0.1:$client/health" >/dev/null 2>&1 && break
  sleep 0.1
done

# Two origins, A and B, with the same election and publisher key.
declare -A pid data
"$bin" keygen --out "$work/publisher.key" > /dev/null
for name in a b; do
  data[$name]=$work/$name
  operator=$(enroll "$work" "${data[$name]}" origin)
  cat > "$work/$name.toml" <<TOML
role = "origin"
data_dir = "${data[$name]}"
[trust]
operators = ["$operator"]
[listen]
http = "127.0.0.1:0"
quic = "127.0.0.1:0"
p2p = "/ip4/127.0.0.1/tcp/0"
iroh = "127.0.0.1:0"
swim = "127.0.0.1:0"
[origin]
publisher_key = "$work/publisher.key"
[ha]
etcd = ["http://127.0.0.1:$client"]
name = "bench"
lease_ttl_s = $ttl
TOML
done
start() {
  rm -f "${data[$1]}/runtime.json"
  RUST_LOG=warn "$bin" run --config "$work/$1.toml" 2>> "$work/$1.log" &
  pid[$1]=$!
  pids+=("${pid[$1]}")
  wait_http "${data[$1]}" "$work/$1.log" > /dev/null
}
state() {
  local http
  http=$(sed -n 's/.*"http": "\(.*\)".*/\1/p' "${data[$1]}/runtime.json")
  curl -s "http://$http/v1/cluster" | python3 -c 'import sys,json; print(json.load(sys.stdin)["self"]["ha"]["state"])' 2>/dev/null
}
wait_state() { # NAME STATE
  for _ in $(seq 400); do [ "$(state "$1")" = "$2" ] && return 0; sleep 0.05; done
  echo "$1 is not $2" >&2; tail -20 "$work/$1.log" >&2; exit 1
}
mkdir -p "$work/src"
for f in "$root"/node/sample/*; do case $f in *.sh) ;; *) cp "$f" "$work/src/" ;; esac; done

start a; wait_state a primary
start b; wait_state b standby
primary=a standby=b

# failover SIGNAL RUNS: kills the primary with SIGNAL RUNS times; the times from the signal to
# the standby's first published ingest go to the array `times` (in this shell: the pids and
# roles it changes must stay visible).
failover() {
  local signal=$1 n=$2 run t0 t1 tmp
  times=()
  for run in $(seq "$n"); do
    # A random point of the renewal cycle (renewals come every TTL/3).
    sleep "$(awk -v r="$RANDOM" -v t="$ttl" 'BEGIN { print 1 + (r / 32768) * t / 3 }')"
    t0=$(date +%s%N)
    kill "-$signal" "${pid[$primary]}"; wait "${pid[$primary]}" 2>/dev/null || true
    until "$bin" ingest --data-dir "${data[$standby]}" --content-id "${signal,,}-$run" \
        --title "run $run" --artist bench "$work/src" > /dev/null 2>&1; do
      sleep 0.02
    done
    t1=$(date +%s%N)
    times+=($(( (t1 - t0) / 1000000 )))
    printf 'SIG%s run %2d: %s stopped, %s published after %d ms\n' "$signal" "$run" "$primary" \
      "$standby" $(( (t1 - t0) / 1000000 )) >&2
    start "$primary"; wait_state "$primary" standby
    tmp=$primary primary=$standby standby=$tmp
  done
}

summary() { # TITLE < times
  local sorted median max min ttl_ms=$((ttl * 1000))
  sorted=$(sort -n)
  median=$(echo "$sorted" | awk '{a[NR]=$1} END {if (NR % 2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}')
  max=$(echo "$sorted" | tail -1)
  min=$(echo "$sorted" | head -1)
  printf '%s, %d runs, lease TTL %d s\n' "$1" "$runs" "$ttl"
  printf '  min    %7d ms  (%.2f x TTL)\n' "$min" "$(echo "$min / $ttl_ms" | bc -l)"
  printf '  median %7s ms  (%.2f x TTL)\n' "$median" "$(echo "$median / $ttl_ms" | bc -l)"
  printf '  max    %7d ms  (%.2f x TTL)\n' "$max" "$(echo "$max / $ttl_ms" | bc -l)"
}

# switchover RUNS: planned handovers; times from the command to the first ingest the former
# standby publishes go to `times`.
switchover() {
  local n=$1 run t0 t1 tmp
  times=()
  for run in $(seq "$n"); do
    sleep 1
    t0=$(date +%s%N)
    "$bin" ha switchover --config "$work/$primary.toml" > "$work/switchover.out" 2>&1 ||
      { cat "$work/switchover.out" >&2; exit 1; }
    until "$bin" ingest --data-dir "${data[$standby]}" --content-id "switch-$run" \
        --title "run $run" --artist bench "$work/src" > /dev/null 2>&1; do
      sleep 0.02
    done
    t1=$(date +%s%N)
    times+=($(( (t1 - t0) / 1000000 )))
    printf 'switchover run %2d: %s -> %s, published after %d ms\n' "$run" "$primary" \
      "$standby" $(( (t1 - t0) / 1000000 )) >&2
    wait_state "$primary" standby
    tmp=$primary primary=$standby standby=$tmp
  done
}

failover KILL "$runs"
killed=$(printf '%s\n' "${times[@]}")
failover TERM "$runs"
stopped=$(printf '%s\n' "${times[@]}")
switchover "$runs"
switched=$(printf '%s\n' "${times[@]}")
echo "$killed" | summary "failover: SIGKILL of the primary -> ingest published at the standby (the lease expires)"
echo "$stopped" | summary "handover: SIGTERM of the primary -> ingest published at the standby (the lease is revoked)"
echo "$switched" | summary "switchover: mhc-node ha switchover -> ingest published at the former standby"
