#!/usr/bin/env bash
# Routing throughput: `GET /play/{id}` (a geo-routed 302) answered by an origin whose cluster
# holds EDGES enrolled edges on loopback, under wrk with CONNS connections; also the origin's idle
# CPU over IDLE seconds of gossip alone. One build, or, with BASELINE_BIN (an earlier commit's
# mhc-node), both builds in alternating rounds and the ratio of their medians.
# Usage: bench/play.sh [SECONDS=10] [CONNS=64] [EDGES=4] [ROUNDS=3] [IDLE=20]   Needs: wrk.
source "$(dirname "$0")/lib.sh"
secs=${1:-10} conns=${2:-64} edges=${3:-4} rounds=${4:-3} idle=${5:-20}

# One round with the build in $bin: prints "REQ_PER_S IDLE_CPU_PERCENT".
one_round() {
  local work origin_p2p i
  work=$(mktemp -d)
  trap 'stop_all; rm -rf "$work"' RETURN
  make_ts_rendition "$work/rendition" 8 65536
  start_origin "$work" 64 1
  "$bin" ingest --data-dir "$origin_data" --content-id bench --title bench --artist bench \
    "$work/rendition" >&2
  origin_p2p=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["p2p"][0])' \
    "$origin_data/runtime.json")
  for i in $(seq "$edges"); do
    start_edge "$work" "edge$i" 64 1 "[cluster]
bootstrap = [\"$origin_p2p\"]"
  done
  # Wait until the origin routes to every edge (its /v1/route lists them all as candidates).
  for _ in $(seq 300); do
    [ "$(curl -sf "http://$origin_http/v1/route/bench" |
      python3 -c 'import json,sys; print(len(json.load(sys.stdin)["candidates"]))')" -ge $((edges + 1)) ] && break
    sleep 0.1
  done
  # Idle: gossip only, the origin's CPU (user + system ticks, USER_HZ 100) over $idle seconds.
  local t0 t1
  t0=$(awk '{print $14 + $15}' "/proc/$origin_pid/stat")
  sleep "$idle"
  t1=$(awk '{print $14 + $15}' "/proc/$origin_pid/stat")
  # The origin on the first core, wrk on the second: on a 2-core machine this keeps the two from
  # trading places from round to round, the largest noise in the figure.
  taskset -a -p -c 0 "$origin_pid" >/dev/null
  # Throughput swings with the neighbours of a virtual machine; the origin's CPU time per answer
  # (user + system, from /proc) does much less, so both are reported.
  local rps requests c0 c1 out
  c0=$(awk '{print $14 + $15}' "/proc/$origin_pid/stat")
  out=$(taskset -c 1 wrk -t 1 -c "$conns" -d "${secs}s" "http://$origin_http/play/bench")
  c1=$(awk '{print $14 + $15}' "/proc/$origin_pid/stat")
  rps=$(awk '/^Requests\/sec:/ {print $2}' <<< "$out")
  requests=$(awk '/requests in/ {print $1}' <<< "$out")
  curl -sf -o /dev/null -w '%{http_code}' "http://$origin_http/play/bench" | grep -q 302 ||
    { echo "/play/bench did not answer 302" >&2; exit 1; }
  echo "$rps $(awk -v d=$((t1 - t0)) -v s="$idle" 'BEGIN {printf "%.2f", d / s}')" \
    "$(awk -v c=$((c1 - c0)) -v n="$requests" 'BEGIN {printf "%.2f", c * 10000 / n}')"
}

median() { sort -g | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }

build_release
current=$bin
trap 'stop_all' EXIT
if [ -z "${BASELINE_BIN:-}" ]; then
  read -r rps cpu us < <(one_round)
  echo "/play: $rps req/s at $conns connections, $edges edges, $us µs of origin CPU per answer;" \
    "origin idle CPU $cpu% of a core"
  exit 0
fi
: > /tmp/play-bench.$$
for r in $(seq "$rounds"); do
  for which in baseline current; do
    if [ "$which" = baseline ]; then bin=$BASELINE_BIN; else bin=$current; fi
    read -r rps cpu us < <(one_round)
    echo "round $r $which: $rps req/s, $us µs CPU per answer, idle CPU $cpu%" >&2
    echo "$which $rps $cpu $us" >> /tmp/play-bench.$$
  done
done
for which in baseline current; do
  rps=$(awk -v w=$which '$1 == w {print $2}' /tmp/play-bench.$$ | median)
  cpu=$(awk -v w=$which '$1 == w {print $3}' /tmp/play-bench.$$ | median)
  us=$(awk -v w=$which '$1 == w {print $4}' /tmp/play-bench.$$ | median)
  echo "$which: median $rps req/s, $us µs CPU per answer, idle CPU $cpu% of a core"
  eval "${which}_rps=$rps ${which}_cpu=$cpu ${which}_us=$us"
done
rm -f /tmp/play-bench.$$
awk -v a="$current_rps" -v b="$baseline_rps" -v c="$current_cpu" -v d="$baseline_cpu" \
  -v e="$current_us" -v f="$baseline_us" \
  'BEGIN {printf "current / baseline: /play throughput %.3f, CPU per answer %.3f, idle CPU %.3f\n",
    a / b, e / f, (d > 0 ? c / d : 0)}'
