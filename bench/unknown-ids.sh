#!/usr/bin/env bash
# Requests for content nobody has: an edge whose parent is the origin answers wrk's requests
# for random ids out of ID_SPACE unknown ones. Prints the requests made, how many manifest
# questions reached the origin (at most one per id per 10 s negative-cache TTL, if fills
# coalesce and the negative cache holds), and the edge's RSS before and after (flat: the
# negative cache is a bounded LRU).
# Usage: bench/unknown-ids.sh [SECONDS=30] [CONNS=64] [ID_SPACE=50000]   Needs: wrk.
source "$(dirname "$0")/lib.sh"
secs=${1:-30} conns=${2:-64} space=${3:-50000}
build_release
work=$(mktemp -d)
trap 'stop_all; rm -rf "$work"' EXIT
start_origin "$work" 64 1
start_edge "$work" edge 64 1
cat > "$work/ids.lua" <<LUA
math.randomseed(os.time() + math.floor(os.clock() * 1e6))
function request()
  return wrk.format("GET", "/v1/content/nobody-" .. math.random(1, $space) .. "/index.m3u8")
end
LUA
asks() {
  curl -sf "http://$origin_http/metrics" |
    awk '/^mhc_quic_responses_total\{kind="manifest",outcome="not_found"\}/ {print $2}' | tail -1
}
rss() { awk '/VmRSS/ {print $2}' "/proc/$edge_pid/status"; }
rss0=$(rss) asks0=$(asks)
out=$(wrk -t2 -c"$conns" -d"${secs}s" -s "$work/ids.lua" "http://$edge_http")
requests=$(awk '/requests in/ {print $1}' <<< "$out")
rps=$(awk '/^Requests\/sec:/ {print $2}' <<< "$out")
rss1=$(rss) asks1=$(asks)
bound=$(awk -v s="$space" -v t="$secs" 'BEGIN {printf "%d", s * (int(t / 10) + 1)}')
echo "requests: $requests ($rps/s) for $space unknown ids over ${secs}s"
echo "manifest questions that reached the origin: $(awk -v a="${asks0:-0}" -v b="${asks1:-0}" 'BEGIN {print b - a}') (at most one per id per 10 s: $bound)"
echo "edge RSS: $rss0 kB before, $rss1 kB after"
